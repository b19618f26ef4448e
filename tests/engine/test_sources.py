"""Source fetching: the SSRF guard, redirects, size caps, timeouts, secrets, file sources.

Every request goes to the local stub server on 127.0.0.1; names resolve through a fake
resolver, so nothing here touches real DNS or any other address.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from edl_api.engine.config import SourceConfig, validate_config_document
from edl_api.engine.pipeline import EngineResult, EngineSettings, run_pipeline
from edl_api.engine.sources import (
    SourceError,
    SsrfPolicy,
    literal_address,
    read_path,
    redirect_target,
    resolve_checked,
)

FAKE_DNS = {
    "feeds.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
    "public.test": ["93.184.216.34"],
    "private.test": ["10.0.0.5"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],
    "mapped.test": ["::ffff:192.168.0.1"],
    "metadata.test": ["169.254.169.254"],
}
lookups: list[str] = []


async def fake_resolver(host: str, port: int) -> list[str]:
    lookups.append(host)
    if host not in FAKE_DNS:
        raise OSError("NXDOMAIN")
    return FAKE_DNS[host]


STRICT = SsrfPolicy.build([], [])


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "2130706433",  # decimal 127.0.0.1
        "0x7f000001",  # hex
        "0x7f.0.0.1",
        "0177.0.0.1",  # octal
        "127.1",  # shorthand
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fc00::1]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",  # IPv4-compatible
        "[64:ff9b::10.0.0.1]",  # NAT64
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo, client 127.0.0.1
        "private.test",
        "mixed.test",
        "mapped.test",
        "metadata.test",
    ],
)
async def test_ssrf_refuses_non_global(host: str) -> None:
    with pytest.raises(SourceError, match="refused"):
        await resolve_checked(host.strip("[]"), 80, STRICT, fake_resolver)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("public.test", (4, 0x5DB8D822)),
        ("8.8.8.8", (4, 0x08080808)),
        ("[2606:4700::1111]", (6, 0x26064700 << 96 | 0x1111)),
        ("[2002:808:808::1]", (6, 0x2002_0808_0808 << 80 | 1)),  # 6to4 of a public address
    ],
)
async def test_ssrf_allows_global(host: str, expected: tuple[int, int]) -> None:
    assert await resolve_checked(host.strip("[]"), 80, STRICT, fake_resolver) == expected


async def test_ssrf_allow_lists() -> None:
    policy = SsrfPolicy.build(["10.0.0.0/8", "::1/128"], ["Private.Test."])
    assert await resolve_checked("10.9.9.9", 80, policy, fake_resolver) == (4, 0x0A090909)
    assert await resolve_checked("::1", 80, policy, fake_resolver) == (6, 1)
    assert await resolve_checked("[::ffff:10.0.0.1]".strip("[]"), 80, policy, fake_resolver)
    assert await resolve_checked("private.test", 80, policy, fake_resolver) == (4, 0x0A000005)
    with pytest.raises(SourceError, match="refused"):
        await resolve_checked("192.168.0.1", 80, policy, fake_resolver)
    with pytest.raises(ValueError, match="not a network"):
        SsrfPolicy.build(["nonsense"], [])


def test_literal_address_forms() -> None:
    assert literal_address("2130706433") == (4, 0x7F000001)
    assert literal_address("0x7f.1") == (4, 0x7F000001)
    assert literal_address("example.com") is None
    assert literal_address("cafe.be") is None
    with pytest.raises(SourceError):
        literal_address("1.2.3.999999")


def test_redirect_rules() -> None:
    assert redirect_target("http://a.test/x/y", "../z") == "http://a.test/z"
    assert redirect_target("http://a.test/", "https://b.test/") == "https://b.test/"
    with pytest.raises(SourceError, match="https to http"):
        redirect_target("https://a.test/", "http://a.test/")
    with pytest.raises(SourceError, match="non-HTTP"):
        redirect_target("http://a.test/", "file:///etc/passwd")


# -- through the engine against the local stub ------------------------------------------------


def _run(server: Any, sources: list[dict[str, Any]], **settings: Any) -> EngineResult:
    port = server.server_address[1]
    for source in sources:
        source["url"] = source["url"].replace("PORT", str(port))
    config = validate_config_document({"sources": sources, "pipeline": {"outputs": ["ip"]}})
    engine_settings = EngineSettings(
        ssrf_allow_hosts=("feeds.test", "other.test"), resolver=fake_resolver, **settings
    )
    return asyncio.run(run_pipeline(config, engine_settings))


def _route(server: Any, path: str, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    def handle(handler: http.server.BaseHTTPRequestHandler) -> bool:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return True

    server.routes[path] = handle


def test_pinned_connection_and_host_header(feed_server: Any) -> None:
    lookups.clear()
    result = _run(feed_server, [{"name": "a", "url": "http://feeds.test:PORT/spamhaus_drop.txt"}])
    assert result.ok, result.errors
    assert len(result.feeds["ip"]) == 6
    assert lookups == ["feeds.test"]  # resolved once, by us
    path, headers = feed_server.requests[0]
    assert path == "/spamhaus_drop.txt"
    assert headers["Host"] == f"feeds.test:{feed_server.server_address[1]}"


def test_redirect_to_private_address_is_refused(feed_server: Any) -> None:
    _route(feed_server, "/to-private", 302, {"Location": "http://private.test/list.txt"})
    port = feed_server.server_address[1]
    _route(feed_server, "/to-loopback", 301, {"Location": f"http://127.0.0.1:{port}/x"})
    _route(feed_server, "/to-mapped", 307, {"Location": "http://[::ffff:10.0.0.1]/x"})
    result = _run(
        feed_server,
        [
            {"name": "a", "url": "http://feeds.test:PORT/to-private"},
            {"name": "b", "url": "http://feeds.test:PORT/to-loopback"},
            {"name": "c", "url": "http://feeds.test:PORT/to-mapped"},
        ],
    )
    assert not result.ok
    assert [e.split(":")[0] for e in result.errors] == ["source a", "source b", "source c"]
    assert all("refused: host resolves to a non-global address" in e for e in result.errors), (
        result.errors
    )
    requested = sorted(path for path, _ in feed_server.requests)
    assert requested == ["/to-loopback", "/to-mapped", "/to-private"]  # no hop was followed


def test_redirects_followed_and_capped(feed_server: Any) -> None:
    port = feed_server.server_address[1]
    _route(feed_server, "/hop", 302, {"Location": "/spamhaus_drop.txt"})
    _route(feed_server, "/loop", 302, {"Location": f"http://other.test:{port}/loop"})
    result = _run(
        feed_server,
        [
            {"name": "ok", "url": "http://feeds.test:PORT/hop"},
            {"name": "loop", "url": "http://feeds.test:PORT/loop"},
        ],
    )
    assert result.errors == ["source loop: more than 5 redirects"]
    assert sum(1 for p, _ in feed_server.requests if p == "/loop") == 6


def test_decoded_size_cap_stops_a_gzip_bomb(feed_server: Any) -> None:
    bomb = gzip.compress(b"0" * (20 * 1024 * 1024))  # 20 MB of zeros in ~20 KB
    _route(feed_server, "/bomb", 200, {"Content-Encoding": "gzip"}, bomb)
    _route(feed_server, "/gz", 200, {"Content-Encoding": "gzip"}, gzip.compress(b"8.8.8.8\n"))
    _route(feed_server, "/gzfile", 200, {}, gzip.compress(b"9.9.9.9\n"))
    _route(feed_server, "/big", 200, {}, b"1.1.1.1\n" * 200_000)
    result = _run(
        feed_server,
        [
            {"name": "bomb", "url": "http://feeds.test:PORT/bomb", "max_bytes": 1_000_000},
            {"name": "big", "url": "http://feeds.test:PORT/big", "max_bytes": 1_000_000},
            {"name": "gz", "url": "http://feeds.test:PORT/gz", "optional": True},
            {"name": "gzfile", "url": "http://feeds.test:PORT/gzfile", "optional": True},
        ],
    )
    assert result.errors == [
        "source bomb: source is larger than max_bytes (1000000)",
        "source big: source is larger than max_bytes (1000000)",
    ]
    assert result.warnings == []
    sources = {s["name"]: s for s in result.report["sources"]}
    assert sources["gz"]["indicators"] == {"ipv4": 1}
    assert sources["gzfile"]["indicators"] == {"ipv4": 1}


def test_source_timeout_and_total_deadline(feed_server: Any) -> None:
    def slow(handler: http.server.BaseHTTPRequestHandler) -> bool:
        time.sleep(2)
        handler.send_response(200)
        handler.end_headers()
        return True

    feed_server.routes["/slow"] = slow
    started = time.monotonic()
    result = _run(
        feed_server,
        [
            {"name": "slow", "url": "http://feeds.test:PORT/slow", "timeout_seconds": 0.3},
            {"name": "fine", "url": "http://feeds.test:PORT/spamhaus_drop.txt"},
        ],
    )
    assert time.monotonic() - started < 1.8
    assert result.errors == ["source slow: timed out after 0.3s"]
    result = _run(
        feed_server,
        [{"name": "slow", "url": "http://feeds.test:PORT/slow"}],
        total_deadline_seconds=0.3,
    )
    assert not result.ok
    assert result.errors[0].startswith("source slow: timed out")


def test_secrets_expand_and_never_leak(
    feed_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-token-value"
    port = feed_server.server_address[1]
    _route(feed_server, "/auth", 302, {"Location": f"http://other.test:{port}/spamhaus_drop.txt"})
    _route(feed_server, "/fail", 500, {}, secret.encode())
    sources = [
        {
            "name": "a",
            "url": "http://feeds.test:PORT/auth",
            "headers": {"Authorization": "Bearer ${secret:FEED}", "X-Plain": "v"},
        },
        {
            "name": "b",
            "url": "http://feeds.test:PORT/fail",
            "headers": {"X-Key": "${secret:FEED}"},
        },
        {
            "name": "c",
            "url": "http://feeds.test:PORT/fail",
            "headers": {"X-Key": "${secret:MISSING}"},
        },
    ]
    result = _run(feed_server, sources, secrets={"FEED": secret})
    by_path = dict(feed_server.requests)
    first, redirected, failed = by_path["/auth"], by_path["/spamhaus_drop.txt"], by_path["/fail"]
    assert len(feed_server.requests) == 3  # source c never sent a request
    assert first["Authorization"] == f"Bearer {secret}"
    assert "Authorization" not in redirected  # credentials stay with their origin
    assert failed["X-Key"] == secret
    assert result.errors == [
        "source b: HTTP 500",
        "source c: header X-Key: secret MISSING is not set for this profile",
    ]
    assert secret not in json.dumps(result.report)
    assert secret not in repr(result)
    assert secret not in capsys.readouterr().out


def test_path_sources(tmp_path: Path) -> None:
    base = tmp_path / "sources"
    (base / "lists").mkdir(parents=True)
    (base / "lists" / "ok.txt").write_text("8.8.8.8\n")
    (tmp_path / "secret.txt").write_text("1.1.1.1\n")
    os.symlink(tmp_path / "secret.txt", base / "lists" / "escape.txt")
    os.symlink(base / "lists" / "ok.txt", base / "lists" / "inside.txt")

    def read(path: str, max_bytes: int = 1000, source_dir: str | None = str(base)) -> bytes:
        source = SourceConfig(name="f", path=path, max_bytes=max_bytes)
        return read_path(source, source_dir).data

    assert read("lists/ok.txt") == b"8.8.8.8\n"
    assert read("lists/inside.txt") == b"8.8.8.8\n"
    with pytest.raises(SourceError, match="escapes"):
        read("lists/escape.txt")
    with pytest.raises(SourceError, match="EDL_SOURCE_DIR"):
        read("lists/ok.txt", source_dir=None)
    with pytest.raises(SourceError, match="max_bytes"):
        read("lists/ok.txt", max_bytes=3)
    with pytest.raises(SourceError, match="cannot read"):
        read("lists/missing.txt")
    with pytest.raises(SourceError, match="escapes"):
        read(".")
