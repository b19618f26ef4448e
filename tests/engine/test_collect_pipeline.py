"""Collectors inside the pipeline: a fake collector (standing in for TAXII/MISP) talks to a
loopback upstream through the pipeline's Fetcher. Its state comes back only for the same
source identity and not with `refetch: full`; a failure keeps the last good state;
`max_bytes` caps all its requests together; its entries' tags, expiry and invalid counts
reach the feeds, the report and explain."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from edl_api.engine import collect
from edl_api.engine.collect import Collected, Fetcher, state_key
from edl_api.engine.config import PipelineConfig, SourceConfig, validate_config_document
from edl_api.engine.explain import lookup
from edl_api.engine.observations import Observation
from edl_api.engine.pipeline import EngineResult, EngineSettings, run_pipeline
from edl_api.engine.sources import SourceError
from tests.helpers import LoopbackServer, answer, loopback

NOW = 1_796_000_000.0  # 2026-11-30T00:53:20Z
DAY = 86_400.0
PAGE = b"x" * 400


class FakeCollector:
    """Reads `pages` pages of /page?n=…, returns `observations`, counts runs in its state."""

    def __init__(self, observations: list[Observation], pages: int = 1) -> None:
        self.observations = observations
        self.pages = pages
        self.calls: list[dict[str, Any] | None] = []
        self.fail = False

    async def __call__(
        self, source: SourceConfig, fetch: Fetcher, previous: dict[str, Any] | None, now: float
    ) -> Collected:
        self.calls.append(previous)
        assert now == NOW
        assert source.url is not None
        if self.fail:
            raise SourceError("HTTP 503")
        for n in range(self.pages):
            page = await fetch(f"{source.url}/page?n={n}", headers={"Accept": "application/x"})
            assert page.data == PAGE
        runs = (previous or {}).get("runs", 0) + 1
        return Collected(list(self.observations), {"runs": runs}, records=len(self.observations),
                         invalid=Counter({"unsupported_pattern": 2}), requests=self.pages)


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    with loopback(routes={"/api/page": lambda handler: answer(handler, 200, PAGE)}) as server:
        yield server


def _config(url: str, **extra: Any) -> PipelineConfig:
    source = {"name": "tip", "url": f"{url}/api", "format": "misp", "tags": ["tip"], **extra}
    return validate_config_document(
        {"sources": [source], "pipeline": {"outputs": ["ipv4", "fqdn", "ip"]}}
    )


def _run(config: PipelineConfig, state: dict[str, Any] | None = None,
         now: float = NOW) -> EngineResult:
    settings = EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",), now=now)
    return asyncio.run(run_pipeline(config, settings, state=state))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCollector:
    collector = FakeCollector([
        Observation("9.9.9.9", seen=NOW - DAY, tags=("tlp:green", "apt-28")),
        Observation("evil.example", seen=NOW - DAY),
        Observation("1.0.0.1", valid_until=NOW - 60),  # expired a minute ago
    ])
    monkeypatch.setattr(collect, "collector", lambda fmt: collector if fmt == "misp" else None)
    return collector


def test_state_is_handed_back_only_for_the_same_source(
    fake: FakeCollector, upstream: LoopbackServer
) -> None:
    config = _config(upstream.url)
    first = _run(config)
    assert first.ok, first.errors
    key = state_key(config.sources[0])
    assert first.state == {"tip": {"key": key, "data": {"collector": {"runs": 1}}}}

    second = _run(config, first.state)
    assert fake.calls == [None, {"runs": 1}]
    assert second.state["tip"]["data"]["collector"] == {"runs": 2}

    # Another collection/server/filter is another source: its old state is not reused.
    moved = _config(upstream.url, filters={"type": "ip-dst"})
    _run(moved, second.state)
    assert fake.calls[-1] is None
    # A stale key is never used either, whatever the name says.
    _run(config, {"tip": {"key": "0" * 32, "data": {"collector": {"runs": 9}}}})
    assert fake.calls[-1] is None
    # refetch: full pulls everything again (the state is written anew).
    full = _run(_config(upstream.url, refetch="full"), second.state)
    assert fake.calls[-1] is None
    assert full.state["tip"]["data"]["collector"] == {"runs": 1}
    # Each request went through the source's own fetch path with the collector's header.
    assert all(headers.get("Accept") == "application/x" for _, headers in upstream.requests)


def test_a_failing_collector_keeps_the_last_good_state(
    fake: FakeCollector, upstream: LoopbackServer
) -> None:
    config = _config(upstream.url)
    good = _run(config)
    fake.fail = True
    failed = _run(config, good.state)
    assert not failed.ok
    assert failed.errors == ["source tip: HTTP 503"]
    assert failed.state == good.state  # nothing lost: the next run resumes from it
    optional = _run(_config(upstream.url, optional=True), good.state)
    assert optional.ok
    assert optional.report["sources"][0]["status"] == "failed"
    assert optional.state["tip"] == good.state["tip"]


def test_max_bytes_caps_the_total_over_all_requests(
    fake: FakeCollector, upstream: LoopbackServer
) -> None:
    fake.pages = 3  # 3 x 400 bytes
    over = _run(_config(upstream.url, max_bytes=1000))
    assert over.errors == ["source tip: source is larger than max_bytes (1000, over 3 requests)"]
    fits = _run(_config(upstream.url, max_bytes=1200))
    assert fits.ok, fits.errors
    (report,) = fits.report["sources"]
    assert report["bytes"] == 1200
    assert report["requests"] == 3


def test_the_run_byte_budget_counts_every_request(
    fake: FakeCollector, upstream: LoopbackServer
) -> None:
    fake.pages = 3
    settings = EngineSettings(ssrf_allow_cidrs=("127.0.0.0/8",), now=NOW, max_run_bytes=1000)
    result = asyncio.run(run_pipeline(_config(upstream.url), settings))
    assert not result.ok
    assert any("run byte budget" in error for error in result.errors)


def test_entries_expiry_tags_and_counts_reach_the_feeds(
    fake: FakeCollector, upstream: LoopbackServer
) -> None:
    result = _run(_config(upstream.url))
    assert result.ok, result.errors
    ipv4 = {e.value: e for e in result.feeds["ipv4"]}
    assert set(ipv4) == {"9.9.9.9"}  # 1.0.0.1 is past its valid_until
    assert ipv4["9.9.9.9"].tags == ["apt-28", "tip", "tlp:green"]
    (name,) = result.feeds["fqdn"]
    assert name.value == "evil.example"
    assert name.tags == ["tip"]
    ip = {e.value: e for e in result.feeds["ip"]}
    assert ip["9.9.9.9"].tags == ["apt-28", "tip", "tlp:green"]

    (report,) = result.report["sources"]
    assert report["lines"] == 3
    assert report["expired"] == 1
    assert report["invalid"] == {"unsupported_pattern": 2}
    assert result.report["counts"]["expired"] == 1
    assert result.explain is not None
    (finding,) = lookup(result.explain, "1.0.0.1")
    assert finding["step"] == "expired"
    assert finding["detail"].startswith("valid_until 2026-11-30 has passed")
    assert finding["sources"] == ["tip"]
