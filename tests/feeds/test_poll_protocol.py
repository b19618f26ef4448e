"""`feeds.poll_protocol`: cached polls answered by the HTTP protocol, through a real uvicorn
server on loopback, byte for byte as uvicorn's own protocol answers them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httptools
import httpx
import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edl_api.feeds.cache import REFRESH_GRACE_SECONDS
from edl_api.feeds.fastpath import FeedFastPath
from edl_api.feeds.poll_protocol import FeedPollProtocol, fast_path_of
from edl_api.state import AppState
from tests.feeds.conftest import make_tenant, publish
from tests.helpers import basic, expect, h


@contextlib.asynccontextmanager
async def serving(app: Any, http: type[asyncio.Protocol], **options: Any) -> AsyncIterator[int]:
    """uvicorn serving the (already started) app on a loopback port, in this loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=http, lifespan="off", log_config=None,
                            access_log=False, server_header=False, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class Responses:
    """Responses parsed off one connection's bytes, in order."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.items.append({"headers": [], "body": b""})

    def on_header(self, name: bytes, value: bytes) -> None:
        self.items[-1]["headers"].append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.items[-1]["status"] = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.items[-1]["body"] += body


async def send_raw(port: int, raw: bytes) -> bytes:
    """Write `raw` (requests, pipelined) and read until the server closes the connection:
    the bytes without their Date lines (the one header that changes by the second)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return b"\r\n".join(line for line in data.split(b"\r\n")
                         if not line.lower().startswith(b"date: "))


def parse(data: bytes) -> list[dict[str, Any]]:
    parsed = Responses()
    parsed.parser.feed_data(data)
    return parsed.items


def request(path: str, auth: dict[str, str], *, method: str = "GET", version: str = "1.1",
            close: bool = False, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in auth.items()]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _feed(app: Any, client: httpx.AsyncClient, tmp_path: Path,
                values: list[str] | None = None) -> tuple[str, dict[str, str], str]:
    a = await make_tenant(client, "a")
    await publish(app, tmp_path, a.pipeline_id, {"ipv4": values or ["192.0.2.1", "192.0.2.7"]})
    token = await expect(await client.post(f"/profiles/{a.profile_id}/feed-tokens",
                                           json={"name": "fw"}, headers=h(a.key)), 201)
    url = f"/pipelines/{a.pipeline_id}/edl/ipv4"
    auth = basic(token["token"])
    first = await client.get(url, headers=auth)  # the route fills the caches
    assert first.status_code == 200
    return url, auth, first.headers["etag"]


class Spy:
    """Counts the polls `EdlApp.__call__` answered through ASGI (the fast path's `answered`)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.asgi = 0
        original = FeedFastPath.answered

        async def answered(fast: FeedFastPath, scope: Any, send: Any) -> bool:
            done = await original(fast, scope, send)
            self.asgi += done
            return done

        monkeypatch.setattr(FeedFastPath, "answered", answered)


async def test_protocol_answers_byte_for_byte_as_uvicorn_does(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    url, auth, etag = await _feed(app, client, tmp_path)
    pipelined = b"".join([
        request(url, auth),
        request(url, auth, Accept_Encoding="gzip"),
        request(url, auth, If_None_Match=etag),
        request(url, auth, If_Modified_Since="Fri, 01 Jan 2100 00:00:00 GMT"),
        request(url + "?format=csv", auth),
        request(url, auth, If_None_Match=f'W/"x", {etag}'),
        # what the caches cannot answer (and what is pipelined behind it) goes to the route
        request(url, {"Authorization": "Basic Znc6bm9wZQ=="}),  # a wrong key: 401
        request("/pipelines/999999/edl/ipv4", auth),  # not this token's: 404
        request("/nope", {}, close=True),
    ])
    async with serving(app, HttpToolsProtocol) as port:
        await send_raw(port, pipelined)  # every feed answer cached (the csv one too)
    answers, asgi = {}, {}
    for protocol in (HttpToolsProtocol, FeedPollProtocol):
        spy = Spy(monkeypatch)
        async with serving(app, protocol) as port:
            answers[protocol] = await send_raw(port, pipelined)
        asgi[protocol] = spy.asgi
    assert answers[FeedPollProtocol] == answers[HttpToolsProtocol]
    ours = parse(answers[FeedPollProtocol])
    assert [r["status"] for r in ours] == [200, 200, 304, 304, 200, 304, 401, 404, 404]
    assert ours[0]["body"] == b"192.0.2.1\n192.0.2.7\n"
    assert (b"connection", b"close") in ours[-1]["headers"]
    # the six cached polls: through ASGI on uvicorn's protocol, none of them on ours
    assert asgi == {HttpToolsProtocol: 6, FeedPollProtocol: 0}


async def test_head_and_http10_end_as_uvicorn_ends_them(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, auth, etag = await _feed(app, client, tmp_path)
    cases = {
        "head": request(url, auth, method="HEAD", close=True),
        "1.0": request(url, auth, version="1.0"),  # HTTP/1.0: answered, then closed
        "1.0 304": request(url, auth, If_None_Match=etag, version="1.0"),
    }
    for name, raw in cases.items():
        seen = {}
        for protocol in (HttpToolsProtocol, FeedPollProtocol):
            async with serving(app, protocol) as port:
                seen[protocol] = await send_raw(port, raw)
        assert seen[FeedPollProtocol] == seen[HttpToolsProtocol], name
        head, _, body = seen[FeedPollProtocol].partition(b"\r\n\r\n")
        assert b"\r\nconnection: close" in head, name
        if name == "head":  # the feed's headers, no payload
            assert head.startswith(b"HTTP/1.1 200")
            assert b"content-length: 20" in head
            assert body == b""
        elif name == "1.0":
            assert body == b"192.0.2.1\n192.0.2.7\n"
        else:
            assert head.startswith(b"HTTP/1.1 304")
            assert body == b""


async def test_a_poll_behind_a_running_request_waits_its_turn(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, monkeypatch: Any
) -> None:
    """Pipelined behind a request uvicorn is still running, a cached poll is answered after
    it (by uvicorn's queue), never before."""
    url, auth, etag = await _feed(app, client, tmp_path)
    body = b'{"name": "x"}'
    post = (f"POST /profiles/999999/feed-tokens HTTP/1.1\r\nHost: x\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    spy = Spy(monkeypatch)
    async with serving(app, FeedPollProtocol) as port:
        data = await send_raw(port, post + request(url, auth, If_None_Match=etag) + request(
            url, auth, If_None_Match=etag, close=True))
    assert [r["status"] for r in parse(data)] == [401, 304, 304], data
    assert spy.asgi == 2  # both polls were queued behind the running POST


async def test_a_client_that_does_not_read_gets_back_pressure(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Hundreds of pipelined polls of a 150 kB feed from a client that reads nothing: the
    server stops answering from the protocol once the socket is full, so what it holds
    stays near one body instead of growing by one body per request."""
    values = [f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}" for i in range(12_000)]
    url, auth, _ = await _feed(app, client, tmp_path, values)
    raw = request(url, auth, Accept_Encoding="identity") * 400
    async with serving(app, FeedPollProtocol) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(raw)
        await asyncio.sleep(1.0)
        held = [p.transport.get_write_buffer_size()
                for p in list(app_server_connections(port))]
        sock.close()
    assert held, "the server saw no connection"
    assert max(held) < 1_000_000, held  # without back-pressure: ~400 × 150 kB = 60 MB


def app_server_connections(port: int) -> list[Any]:
    import gc

    return [obj for obj in gc.get_objects() if isinstance(obj, FeedPollProtocol)
            and obj.transport is not None and not obj.transport.is_closing()
            and obj.server is not None and obj.server[1] == port]


async def test_a_forwarded_poll_records_the_client_the_proxy_names(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, auth, etag = await _feed(app, client, tmp_path)
    ledger = AppState.of(app).ledger
    ledger._pending.clear()
    async with serving(app, FeedPollProtocol, proxy_headers=True,
                       forwarded_allow_ips="127.0.0.1") as port:
        answers = await send_raw(port, request(url, auth, If_None_Match=etag) + request(
            url, auth, If_None_Match=etag, X_Forwarded_For="203.0.113.9", close=True))
    assert [r["status"] for r in parse(answers)] == [304, 304]
    addresses = sorted(str(key[-1]) for key in ledger._pending)
    assert addresses == ["127.0.0.1", "203.0.113.9"]


def test_the_protocol_finds_the_fast_path_only_behind_known_wrappers(app: Any) -> None:
    assert fast_path_of(app) == (app.fast_path, False)
    assert fast_path_of(ProxyHeadersMiddleware(app)) == (app.fast_path, True)
    assert fast_path_of(object()) == (None, False)

    class Tracing:  # any wrapper it does not know: uvicorn's own path
        def __init__(self, inner: Any) -> None:
            self.app = inner

    assert fast_path_of(Tracing(app)) == (None, False)


async def test_shutdown_closes_a_kept_alive_poll_connection(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    url, auth, etag = await _feed(app, client, tmp_path)
    async with serving(app, FeedPollProtocol) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(url, auth, If_None_Match=etag))
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert first.startswith(b"HTTP/1.1 304")
    # the server stopped (within its 10 s wait) and closed the kept-alive connection
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_the_poll_that_finds_its_pointer_expired_refreshes_it_through_the_route(
    app: Any, client: httpx.AsyncClient, tmp_path: Path, outage: Callable[[bool], Any]
) -> None:
    """Once a pointer's TTL is over, the next poll goes to the route, which re-reads the
    database: here the database is down, so from then on every poll is told the feed is
    the last known one (`X-EDL-Stale`). Asked twice (by this protocol, then by
    `EdlApp.__call__`), the second ask took the refresh grace the first one started and
    answered from the old pointer: the route was never reached, and polls went on being
    served as fresh through a whole outage (or past another host's publish)."""
    ttl = 0.3
    AppState.of(app).feed_cache.ttl = ttl
    url, auth, etag = await _feed(app, client, tmp_path)
    seen: list[tuple[float, int, str | None]] = []
    async with serving(app, FeedPollProtocol) as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as polls:
        await outage(True)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < ttl + REFRESH_GRACE_SECONDS + 3 * ttl:
            r = await polls.get(url, headers=auth | {"If-None-Match": etag})
            seen.append((elapsed, r.status_code, r.headers.get("x-edl-stale")))
            await asyncio.sleep(ttl / 4)
    assert {status for _, status, _ in seen} == {304}, seen
    # the first poll past the TTL refreshes (stale from then on); a poll that came in
    # its grace may still say fresh, none after it
    late = [stale for t, _, stale in seen if t > ttl + REFRESH_GRACE_SECONDS + ttl / 2]
    assert late, seen
    assert set(late) == {"db-unavailable"}, seen
