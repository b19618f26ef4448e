"""MISP sources against real HTTP on loopback: a feed folder served as a MISP instance
publishes it (tests/fixtures/misp/feed), and a stub MISP server answering restSearch."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edl_api.engine import misp
from edl_api.engine.collect import Collected, Fetcher, collector
from edl_api.engine.config import SourceConfig, validate_config_document
from edl_api.engine.misp import collect_misp
from edl_api.engine.observations import Observation
from edl_api.engine.pipeline import EngineSettings, run_pipeline
from edl_api.engine.sources import Fetched, SourceError, SsrfPolicy, fetch_url, make_client
from tests.helpers import LoopbackServer, answer, loopback, serving

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "misp"
LOOPBACK = SsrfPolicy.build(["127.0.0.0/8"], [])
NOW = 1_718_000_000.0
EMOTET = "5f6c2b1a-8d3e-4c7a-9b1e-2a3c4d5e6f70"
PHISH = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d01"
COBALT = "9c0d1e2f-3a4b-4c5d-9e6f-7a8b9c0d1e23"
# Emotet: attributes and the domain-ip object; the hostname is to_ids false, the ip-src
# deleted, md5/link/filename/sha256 unsupported.
EMOTET_VALUES = {
    "203.0.113.10", "198.51.100.7", "emotet-c2.example", "http://bad.example/payload.exe",
    "loader.emotet.example", "203.0.113.11",
}
# Phishing: both halves of domain|ip; uri and email-src unsupported.
PHISH_VALUES = {"secure-login.phish.example", "192.0.2.55", "https://secure-login.phish.example/bank/"}
# Cobalt Strike: a CIDR, the host of hostname|port, IPv6, and a non-IP the engine rejects.
COBALT_VALUES = {"203.0.113.0/28", "beacon.cs.example", "2001:db8::66", "not-an-ip"}
FEED_VALUES = EMOTET_VALUES | PHISH_VALUES | COBALT_VALUES


def source(url: str, **extra: Any) -> SourceConfig:
    return SourceConfig.model_validate({"name": "misp", "url": url, "format": "misp", **extra})


@asynccontextmanager
async def fetcher(
    config: SourceConfig, available: Mapping[str, str] | None = None
) -> AsyncIterator[Fetcher]:
    """A Fetcher as the pipeline builds one: every request through `fetch_url` (SSRF guard
    allowing loopback only, the source's headers and secrets, its caps)."""
    client = make_client()

    async def fetch(
        url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Fetched:
        return await fetch_url(
            client, config, LOOPBACK, None, available or {}, set(), url=url, method=method,
            body=body, extra_headers=headers,
        )

    try:
        yield fetch
    finally:
        await client.aclose()


async def collect(config: SourceConfig, previous: dict[str, Any] | None = None) -> Collected:
    async with fetcher(config) as fetch:
        return await collect_misp(config, fetch, previous, NOW)


def by_value(collected: Collected) -> dict[str, Observation]:
    return {o.value: o for o in collected.observations}


def paths(server: LoopbackServer) -> list[str]:
    return sorted(path for path, _ in server.requests)


@pytest.fixture
def feed_dir(tmp_path: Path) -> Path:
    """A private copy of the feed fixture, which a test may republish."""
    return Path(shutil.copytree(FIXTURES / "feed", tmp_path / "feed"))


def republish(feed_dir: Path, uuid: str, timestamp: int, attribute: dict[str, Any]) -> None:
    """What a MISP instance does on an edit: new attribute, new event and manifest stamps."""
    event_file = feed_dir / f"{uuid}.json"
    event = json.loads(event_file.read_text())
    event["Event"]["timestamp"] = str(timestamp)
    event["Event"]["Attribute"].append(attribute)
    event_file.write_text(json.dumps(event))
    manifest = json.loads((feed_dir / "manifest.json").read_text())
    manifest[uuid]["timestamp"] = timestamp
    (feed_dir / "manifest.json").write_text(json.dumps(manifest))


def unpublish(feed_dir: Path, uuid: str) -> None:
    manifest = json.loads((feed_dir / "manifest.json").read_text())
    del manifest[uuid]
    (feed_dir / "manifest.json").write_text(json.dumps(manifest))
    (feed_dir / f"{uuid}.json").unlink()


# --- feeds -------------------------------------------------------------------------------


async def test_feed_values_skips_counts_and_tags(feed_dir: Path) -> None:
    assert collector("misp") is collect_misp
    with loopback(feed_dir) as server:
        collected = await collect(source(f"{server.url}/"))
    assert {o.value for o in collected.observations} == FEED_VALUES
    assert len(collected.observations) == len(FEED_VALUES)  # no event gives a value twice
    assert collected.records == 19  # 11 + 4 + 4 attributes; the deleted one is not read
    assert collected.invalid == {"unsupported_type": 6, "not_ids": 1}
    assert collected.requests == 4
    assert paths(server) == sorted(
        ["/manifest.json", f"/{EMOTET}.json", f"/{PHISH}.json", f"/{COBALT}.json"]
    )
    values = by_value(collected)
    c2 = values["emotet-c2.example"]
    assert c2.seen == 1717170003.0  # the attribute's timestamp
    assert c2.valid_until is None
    assert c2.tags == (
        "misp-event:OSINT-Emotet-epoch-5-infrastructure", "tlp:white", "type:OSINT",
        "misp-galaxy:malpedia-Emotet", "kill-chain:Command-and-Control",
    )
    assert values["loader.emotet.example"].tags == c2.tags[:4]  # object attributes too
    assert values["192.0.2.55"].tags == ("misp-event:Phishing-kit-targeting-bank-customers",
                                         "tlp:green")
    assert values["2001:db8::66"].tags == (
        "misp-event:Cobalt-Strike-team-servers", "misp-galaxy:tool-Cobalt-Strike", "tlp:white",
        "tlp:amber", "confidence-level:confidence-high",
    )
    assert set(collected.state or {}) == {"events"}
    assert set(collected.state["events"]) == {EMOTET, PHISH, COBALT}  # type: ignore[index]


async def test_manifest_url_and_non_ids(feed_dir: Path) -> None:
    with loopback(feed_dir) as server:
        collected = await collect(source(f"{server.url}/manifest.json", include_non_ids=True))
    values = by_value(collected)
    assert "mail.victim.example" in values  # to_ids false, taken on request
    assert "192.0.2.99" not in values  # deleted stays deleted
    assert "https://www.circl.lu/pub/tr-99/" not in values  # a link is not an indicator
    assert collected.invalid == {"unsupported_type": 6}


async def test_refresh_fetches_only_changed_events_and_drops_removed(feed_dir: Path) -> None:
    with loopback(feed_dir) as server:
        first = await collect(source(server.url))
        # The state goes through the database as JSON.
        state = json.loads(json.dumps(first.state))
        republish(feed_dir, COBALT, 1717600000, {
            "category": "Network activity", "comment": "", "deleted": False,
            "disable_correlation": False, "timestamp": "1717599999", "to_ids": True,
            "type": "ip-dst", "uuid": "6a1b2c3d-0000-4000-8000-999999999999",
            "value": "198.51.100.250",
        })
        unpublish(feed_dir, PHISH)
        server.requests.clear()
        second = await collect(source(server.url), state)
        assert paths(server) == sorted(["/manifest.json", f"/{COBALT}.json"])
        assert second.requests == 2
        values = by_value(second)
        assert values["198.51.100.250"].seen == 1717599999.0
        assert set(values) == EMOTET_VALUES | COBALT_VALUES | {"198.51.100.250"}
        # The unchanged event comes back from state exactly as it was read.
        old = by_value(first)
        assert all(values[v] == old[v] for v in EMOTET_VALUES)
        assert second.records == 19 - 4 + 1
        assert second.invalid == {"unsupported_type": 4, "not_ids": 1}
        assert set(second.state["events"]) == {EMOTET, COBALT}  # type: ignore[index]

        server.requests.clear()
        third = await collect(source(server.url, refetch="full"), second.state)
        assert paths(server) == sorted(["/manifest.json", f"/{EMOTET}.json", f"/{COBALT}.json"])
        assert by_value(third) == values


async def test_string_flags_and_a_corrupt_state(feed_dir: Path) -> None:
    """MISP's booleans also arrive as "0"/"1"; a state this module did not write is
    refetched, never trusted."""
    event_file = feed_dir / f"{EMOTET}.json"
    event = json.loads(event_file.read_text())
    for attribute in event["Event"]["Attribute"]:
        attribute["to_ids"] = "1" if attribute["to_ids"] else "0"
        attribute["deleted"] = "1" if attribute["deleted"] else "0"
    event_file.write_text(json.dumps(event))
    stamp = json.loads((feed_dir / "manifest.json").read_text())[EMOTET]["timestamp"]
    corrupt = {"events": {EMOTET: {"timestamp": str(stamp), "entries": "nonsense"}}}
    with loopback(feed_dir) as server:
        collected = await collect(source(server.url), corrupt)
    assert {o.value for o in collected.observations} == FEED_VALUES
    assert collected.invalid == {"unsupported_type": 6, "not_ids": 1}
    assert collected.requests == 4


async def test_events_are_fetched_four_at_a_time(feed_dir: Path) -> None:
    manifest = json.loads((feed_dir / "manifest.json").read_text())
    template = (feed_dir / f"{COBALT}.json").read_text()
    for n in range(12):
        uuid = f"00000000-0000-4000-8000-{n:012d}"
        manifest[uuid] = dict(manifest[COBALT])
        (feed_dir / f"{uuid}.json").write_text(template)
    (feed_dir / "manifest.json").write_text(json.dumps(manifest))
    lock = threading.Lock()
    flight = {"now": 0, "max": 0}

    def slow(handler: BaseHTTPRequestHandler) -> bool:
        with lock:
            flight["now"] += 1
            flight["max"] = max(flight["max"], flight["now"])
        time.sleep(0.05)
        with lock:
            flight["now"] -= 1
        return False  # then served from the folder

    routes = {f"/{uuid}.json": slow for uuid in manifest}
    with loopback(feed_dir, routes) as server:
        collected = await collect(source(server.url))
    assert collected.requests == 16
    assert flight["max"] == misp.EVENT_FETCHES


async def test_broken_feeds_fail_and_say_why(
    feed_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loopback(feed_dir) as server:
        (feed_dir / f"{PHISH}.json").unlink()
        with pytest.raises(SourceError, match=f"event {PHISH} .listed in manifest.json.: HTTP 404"):
            await collect(source(server.url))

        with pytest.raises(SourceError, match="MISP feed's folder"):
            await collect(source(f"{server.url}/nothing-here/"))

        monkeypatch.setattr(misp, "MAX_FEED_EVENTS", 2)
        with pytest.raises(SourceError, match="lists 3 events, more than the 2"):
            await collect(source(server.url))
        monkeypatch.undo()

        (feed_dir / "manifest.json").write_text("<!DOCTYPE html><html>Sign in</html>")
        with pytest.raises(SourceError, match="manifest.json is a web page"):
            await collect(source(server.url))
        (feed_dir / "manifest.json").write_text('["not", "a", "manifest"]')
        with pytest.raises(SourceError, match="not a MISP feed manifest"):
            await collect(source(server.url))
        # A key that is no uuid never becomes a URL path (../ or an absolute URL).
        (feed_dir / "manifest.json").write_text('{"../secrets": {"timestamp": 1}}')
        with pytest.raises(SourceError, match="not a MISP feed manifest"):
            await collect(source(server.url))
        (feed_dir / "manifest.json").write_text(json.dumps({PHISH: {"timestamp": 1}}))
        (feed_dir / f"{PHISH}.json").write_text('{"response": "Not Found"}')
        with pytest.raises(SourceError, match=f"event {PHISH}.json is not a MISP event"):
            await collect(source(server.url))


async def test_pipeline_runs_a_feed_incrementally_and_ages_it_out(feed_dir: Path) -> None:
    """Through run_pipeline: the engine classifies (not-an-ip is unrecognised), max_age_days
    judges each attribute's timestamp, and the next run reuses the state (manifest only)."""
    with loopback(feed_dir) as server:
        config = validate_config_document({"sources": [{
            "name": "circl", "url": f"{server.url}/", "format": "misp", "max_age_days": 2,
        }]})
        # Two days after the phishing event, one hour after the Cobalt Strike one.
        settings = EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",), now=1717499004 + 3600)
        first = await run_pipeline(config, settings)
        assert first.ok, first.errors
        assert [e.value for e in first.feeds["fqdn"]] == ["beacon.cs.example"]
        [report] = first.report["sources"]
        assert report["requests"] == 4
        assert report["lines"] == 19
        assert report["invalid"] == {"not_ids": 1, "unrecognised": 1, "unsupported_type": 6}
        assert report["expired"] == 9  # the Emotet (6) and phishing (3) entries
        assert "secure-login.phish.example" not in {e.value for e in first.feeds["url"]}

        server.requests.clear()
        second = await run_pipeline(config, settings, state=first.state)
        assert [path for path, _ in server.requests] == ["/manifest.json"]
        assert second.feeds == first.feeds
        assert second.report["sources"][0]["invalid"] == report["invalid"]


# --- restSearch --------------------------------------------------------------------------


class MispStub(ThreadingHTTPServer):
    """A MISP server's restSearch: answers `status`/`body`, records (path, headers, body)."""

    daemon_threads = True

    def __init__(self, body: bytes, status: int = 200, media: str = "application/json") -> None:
        super().__init__(("127.0.0.1", 0), _MispHandler)
        self.body, self.status, self.media = body, status, media
        self.seen: list[tuple[str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/attributes/restSearch"


class _MispHandler(BaseHTTPRequestHandler):
    server: MispStub

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append((self.path, dict(self.headers.items()), body))
        answer(self, self.server.status, self.server.body, {"Content-Type": self.server.media})


def rest_source(url: str, **extra: Any) -> SourceConfig:
    return source(url, headers={"Authorization": "${secret:MISP_KEY}"}, **extra)


async def search(stub: MispStub, **extra: Any) -> Collected:
    config = rest_source(stub.url, **extra)
    async with fetcher(config, {"MISP_KEY": "s3cr3t-misp-key"}) as fetch:
        return await collect_misp(config, fetch, None, NOW)


async def test_rest_search_request_and_attributes() -> None:
    filters = {"type": ["ip-dst", "domain", "url"], "last": "30d", "returnFormat": "csv"}
    with serving(MispStub((FIXTURES / "rest_search.json").read_bytes())) as stub:
        collected = await search(stub, filters=filters)
    [(path, headers, body)] = stub.seen
    assert path == "/attributes/restSearch"
    assert json.loads(body) == {"type": ["ip-dst", "domain", "url"], "last": "30d",
                                "returnFormat": "json"}  # a filter cannot change the format
    assert headers["Authorization"] == "s3cr3t-misp-key"
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/json"
    values = by_value(collected)
    assert set(values) == {"198.51.100.20", "ransom-c2.example", "198.51.100.21",
                           "login-phish.example", "192.0.2.77"}
    assert collected.invalid == {"not_ids": 1, "unsupported_type": 1}
    assert collected.records == 6  # the deleted attribute is not read
    assert collected.state is None  # a full pull every run
    assert values["198.51.100.20"].seen == 1718000001.0
    assert values["198.51.100.20"].tags == (
        "misp-event:Ransomware-C2-internal-case-2024-117", "tlp:amber",
    )
    assert values["192.0.2.77"].tags == values["login-phish.example"].tags == (
        "misp-event:Credential-phishing-wave", "tlp:green", "phishing",
    )


async def test_rest_search_tags_are_bounded() -> None:
    attribute = {
        "type": "domain", "value": "many-tags.example", "to_ids": True,
        "timestamp": "1718000000", "Event": {"info": "A" * 200, "uuid": EMOTET},
        "Tag": [{"name": f"actor:{n}"} for n in range(30)],
    }
    body = json.dumps({"response": {"Attribute": [attribute]}}).encode()
    with serving(MispStub(body)) as stub:
        [observation] = (await search(stub)).observations
    assert len(observation.tags) == misp.MAX_TAGS
    assert observation.tags[0] == "misp-event:" + "A" * (64 - len("misp-event:"))
    assert observation.tags[1:3] == ("actor:0", "actor:1")


@pytest.mark.parametrize(
    ("status", "body", "media", "message"),
    [
        (403, b'{"name": "Authentication failed."}', "application/json", "check the API key"),
        (401, b"", "application/json", "check the API key"),
        (200, b"<!DOCTYPE html><html><form>Login</form></html>", "text/html", "a web page"),
        (200, b'{"name": "Not Found", "url": "/attributes/x"}', "application/json",
         "not MISP JSON"),
        (200, b"id,type,value\n1,ip-dst,1.2.3.4\n", "text/csv", "is not JSON"),
        (500, b"", "application/json", "HTTP 500"),
    ],
)
async def test_rest_search_failures(status: int, body: bytes, media: str, message: str) -> None:
    with serving(MispStub(body, status, media)) as stub, pytest.raises(SourceError) as failure:
        await search(stub)
    assert message in str(failure.value)
    assert "s3cr3t" not in str(failure.value)


async def test_rest_search_nothing_matched() -> None:
    with serving(MispStub(b'{"response": []}')) as stub:
        collected = await search(stub)
    assert collected.observations == []
    assert collected.records == 0


async def test_a_feed_of_mostly_hashes_is_a_working_feed(feed_dir: Path) -> None:
    """CIRCL's OSINT feed is mostly file hashes: records that are not ours to publish
    (`unsupported_type`, `not_ids`) are counted, never taken for garbage by
    min_valid_percent, so the feed's few network indicators are still published."""
    uuid = "5f6c2b1a-8d3e-4c7a-9b1e-2a3c4d5e6f70"
    event_file = feed_dir / f"{uuid}.json"
    event = json.loads(event_file.read_text())
    event["Event"]["Attribute"].extend(
        {"type": "sha256", "value": f"{n:064x}", "to_ids": True, "category": "Payload delivery",
         "timestamp": event["Event"]["timestamp"], "uuid": f"00000000-0000-4000-8000-{n:012x}"}
        for n in range(200)
    )
    event_file.write_text(json.dumps(event))
    with loopback(feed_dir) as server:
        config = validate_config_document({"sources": [{
            "name": "circl", "url": f"{server.url}/", "format": "misp",
        }]})
        result = await run_pipeline(config, EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",)))
    assert result.ok, result.errors
    [report] = result.report["sources"]
    assert report["invalid"]["unsupported_type"] == 206
    assert "beacon.cs.example" in {e.value for e in result.feeds["fqdn"]}
