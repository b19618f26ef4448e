"""`format: taxii` against a real TAXII 2.1 server (OASIS medallion on loopback, Basic auth
on): collection lookup, paging, incremental refresh by added_after, errors that say
what to do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from edl_api.engine.collect import Collected
from edl_api.engine.config import SourceConfig, validate_config_document
from edl_api.engine.observations import parse_when
from edl_api.engine.pipeline import EngineSettings, run_pipeline
from edl_api.engine.sources import Fetched, SourceError, SsrfPolicy, fetch_url, make_client
from edl_api.engine.taxii import collect_taxii
from tests.helpers import answer, loopback
from tests.medallion_server import (
    READER_PASSWORD,
    SAMPLE_VALUES,
    SECRET_COLLECTION_TITLE,
    Medallion,
    indicator,
    medallion,
)

NOW = parse_when("2026-12-01T00:00:00Z") or 0.0
LOOPBACK = SsrfPolicy.build(["127.0.0.0/8"], [])


class LoopbackFetcher:
    """A collector's Fetcher as the pipeline builds one: every request through `fetch_url`
    (SSRF guard with the loopback grant, the source's Basic auth, its caps)."""

    def __init__(self, source: SourceConfig, password: str = READER_PASSWORD) -> None:
        self.source = source
        self.available = {"TAXII_PASSWORD": password}
        self.secrets: set[str] = set()
        self.urls: list[str] = []

    async def __call__(
        self, url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Fetched:
        self.urls.append(url)
        async with make_client() as client:
            return await fetch_url(
                client, self.source, LOOPBACK, None, self.available, self.secrets,
                url=url, method=method, body=body, extra_headers=headers,
            )


def taxii_source(server: Medallion, **fields: Any) -> SourceConfig:
    spec: dict[str, Any] = {
        "name": "intel", "url": server.root, "format": "taxii",
        "collection": server.collection_id,
        "basic_auth": {"username": "reader", "password": "${secret:TAXII_PASSWORD}"},
        "timeout_seconds": 10.0,
    }
    return SourceConfig.model_validate(spec | fields)


async def collect(
    source: SourceConfig, previous: dict[str, Any] | None = None, *,
    password: str = READER_PASSWORD,
) -> tuple[Collected, LoopbackFetcher]:
    fetcher = LoopbackFetcher(source, password)
    return await collect_taxii(source, fetcher, previous, NOW), fetcher


def values(collected: Collected) -> set[str]:
    return {o.value for o in collected.observations}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Medallion]:
    """One read-only server for the tests that only read (a test that adds objects starts
    its own)."""
    with medallion(tmp_path_factory.mktemp("taxii")) as running:
        yield running


async def test_pulls_the_collection(server: Medallion) -> None:
    collected, fetcher = await collect(taxii_source(server))
    assert values(collected) == SAMPLE_VALUES
    assert collected.records == 10  # every object the server sent, SDOs included
    assert collected.invalid == {"unsupported_pattern": 2}  # the AND and the file hash
    assert "185.220.101.66" not in values(collected)  # revoked
    assert collected.requests == 2 == len(fetcher.urls)
    by_value = {o.value: o for o in collected.observations}
    first = by_value["185.220.101.10"]
    assert first.tags == ("tlp:amber", "malicious-activity")
    assert first.seen == parse_when("2025-06-01T00:00:01.000Z")
    assert first.valid_until is None
    # Carried, not judged: the pipeline expires it.
    assert by_value["185.220.101.99"].valid_until == parse_when("2025-07-01T00:00:00Z")
    assert collected.state is not None
    assert collected.state["added_after"] == "2025-06-02T00:00:09.000000Z"
    # Indicators 1-5 kept; 9 expired over 30 days before NOW, so only this run has it.
    assert len(collected.state["objects"]) == 5


async def test_collection_by_title_and_api_root_without_slash(server: Medallion) -> None:
    exact, _ = await collect(taxii_source(server, collection=server.collection_title))
    folded, _ = await collect(taxii_source(
        server, collection=server.collection_title.upper(), url=server.root.rstrip("/"),
    ))
    assert values(exact) == values(folded) == SAMPLE_VALUES


async def test_unknown_collection_lists_titles(server: Medallion) -> None:
    with pytest.raises(SourceError) as failure:
        await collect(taxii_source(server, collection="No Such Collection"))
    message = str(failure.value)
    assert "'No Such Collection' not found" in message
    assert f"'{server.collection_title}'" in message
    assert f"'{SECRET_COLLECTION_TITLE}'" in message


async def test_unreadable_collection(server: Medallion) -> None:
    with pytest.raises(SourceError, match="can_read false"):
        await collect(taxii_source(server, collection=SECRET_COLLECTION_TITLE))


async def test_wrong_password_says_check_basic_auth(server: Medallion) -> None:
    with pytest.raises(SourceError) as failure:
        await collect(taxii_source(server), password="wrong-password")
    message = str(failure.value)
    assert "HTTP 401" in message
    assert "check basic_auth / headers" in message
    assert "wrong-password" not in message


async def test_discovery_url_instead_of_api_root(server: Medallion) -> None:
    with pytest.raises(SourceError, match="must be a TAXII 2.1 API root"):
        await collect(taxii_source(server, url=f"{server.base}/taxii2/"))


async def test_pages_with_next(server: Medallion) -> None:
    mark = server.mark()
    collected, _ = await collect(taxii_source(server, page_size=2))
    assert values(collected) == SAMPLE_VALUES
    assert collected.records == 10
    assert collected.requests == 1 + 5
    pages = [line for line in server.requests()[mark:] if "/objects/" in line]
    assert len(pages) == 5
    assert "limit=2" in pages[0]
    assert "next=" not in pages[0]
    assert all("limit=2" in line and "next=" in line and line.endswith(" 200")
               for line in pages[1:])
    assert collected.state is not None
    assert collected.state["added_after"] == "2025-06-02T00:00:09.000000Z"


async def test_server_page_size_without_page_size(tmp_path: Path) -> None:
    """The server pages on its own (max_page_size 4); we follow `next` without a limit of
    our own (medallion needs one with next: we send the size it chose)."""
    with medallion(tmp_path, max_page_size=4) as small:
        collected, _ = await collect(taxii_source(small))
        pages = [line for line in small.requests() if "/objects/" in line]
    assert values(collected) == SAMPLE_VALUES
    assert len(pages) == 3
    assert "limit=" not in pages[0]
    assert all("next=" in line and "limit=4" in line for line in pages[1:])


async def test_incremental_refresh_fetches_only_new_objects(tmp_path: Path) -> None:
    with medallion(tmp_path) as server:
        source = taxii_source(server, page_size=3)
        first, _ = await collect(source)
        assert first.state is not None
        cursor = first.state["added_after"]
        server.add_objects([
            indicator(20, "[ipv4-addr:value = '185.220.101.20']"),
            indicator(21, "[domain-name:value = 'new-taxii.example']"),
            # A new version of indicator 3: its old value leaves, the new one arrives.
            indicator(3, "[domain-name:value = 'moved-taxii.example']",
                      modified="2025-06-05T00:00:00.000Z"),
            # Indicator 1 revoked: it leaves.
            indicator(1, "[ipv4-addr:value = '185.220.101.10']", revoked=True,
                      modified="2025-06-05T00:00:00.000Z"),
        ])
        mark = server.mark()
        second, _ = await collect(source, first.state)
        refresh = [line for line in server.requests()[mark:] if "/objects/" in line]

        assert second.records == 4
        assert refresh
        assert all(f"added_after={cursor}" in unquote(line) for line in refresh)
        # 185.220.101.99 expired long ago: the first run returned it (for the pipeline to count
        # as expired), its state did not keep it.
        assert values(second) == (
            SAMPLE_VALUES - {"evil-taxii.example", "185.220.101.10", "185.220.101.99"}
            | {"185.220.101.20", "new-taxii.example", "moved-taxii.example"}
        )
        assert second.state is not None
        assert parse_when(second.state["added_after"]) > parse_when(cursor)  # type: ignore[operator]

        # Nothing new: one page, nothing received, everything still there.
        third, _ = await collect(source, second.state)
        assert third.records == 0
        assert values(third) == values(second)
        assert third.state is not None
        assert third.state["added_after"] == second.state["added_after"]

        # refetch: full asks from the start, without added_after.
        mark = server.mark()
        full, _ = await collect(taxii_source(server, refetch="full"), second.state)
        pulls = [line for line in server.requests()[mark:] if "/objects/" in line]
        assert pulls
        assert all("added_after" not in line for line in pulls)
        assert full.records == 12  # the latest version of each of the 12 objects
        assert values(full) == values(second) | {"185.220.101.99"}


async def test_state_prunes_long_expired_items(server: Medallion) -> None:
    collected, _ = await collect(taxii_source(server))
    assert collected.state is not None
    later = await collect_taxii(
        taxii_source(server), LoopbackFetcher(taxii_source(server)), collected.state,
        NOW + 400 * 86_400,
    )
    assert later.state is not None
    # 185.220.101.99 expired 2025-07-01: > 30 days before either clock, so never kept.
    kept = {v for item in later.state["objects"].values() for v in item["values"]}
    assert "185.220.101.99" not in kept
    assert "185.220.101.99" not in {
        v for item in collected.state["objects"].values() for v in item["values"]
    }


async def test_not_an_envelope(feed_server: Any) -> None:
    """A server answering plain text where TAXII JSON belongs fails clearly."""
    source = SourceConfig.model_validate({
        "name": "intel", "url": f"{feed_server.url}/", "format": "taxii",
        "collection": "x", "timeout_seconds": 5.0,
    })
    fetcher = LoopbackFetcher(source)
    with pytest.raises(SourceError, match="API root|not a TAXII 2.1"):
        await collect_taxii(source, fetcher, None, NOW)


def test_medallion_answers_taxii_media_type(server: Medallion) -> None:
    """The helper's server is a real TAXII 2.1 server: discovery with our media type."""
    answer = httpx.get(
        f"{server.base}/taxii2/", auth=("reader", READER_PASSWORD),
        headers={"Accept": "application/taxii+json;version=2.1"}, timeout=5,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/taxii+json")
    assert answer.json()["api_roots"] == [server.root]


def _looping_server(more_without_next: bool = False) -> Any:
    """A broken TAXII server: its objects/ always says `more` with the same page."""
    collections = json.dumps({"collections": [{"id": "c1", "title": "Loop", "can_read": True}]})
    page: dict[str, Any] = {
        "more": True, "objects": [indicator(1, "[ipv4-addr:value = '1.2.3.4']")],
    }
    if not more_without_next:
        page["next"] = "same-token"
    taxii = {"Content-Type": "application/taxii+json;version=2.1"}
    return loopback(routes={
        "/root/collections/": lambda handler: answer(handler, 200, collections.encode(), taxii),
        "/root/collections/c1/objects/": lambda handler: answer(
            handler, 200, json.dumps(page).encode(), taxii),
    })


@pytest.mark.parametrize("more_without_next", [False, True])
async def test_paging_loop_is_an_error(more_without_next: bool) -> None:
    with _looping_server(more_without_next) as broken:
        source = SourceConfig.model_validate({
            "name": "intel", "url": f"{broken.url}/root/", "format": "taxii",
            "collection": "Loop", "timeout_seconds": 5.0,
        })
        with pytest.raises(SourceError, match="paging loop|neither next nor"):
            await collect_taxii(source, LoopbackFetcher(source), None, NOW)
        pages = [path for path, _ in broken.requests if "/objects/" in path]
    assert len(pages) == (2 if not more_without_next else 1)


# --- through the engine's pipeline ------------------------------------------------------------


def test_pipeline_pulls_incrementally(tmp_path: Path) -> None:
    """`run_pipeline` on a `format: taxii` config: the first run publishes the collection
    and counts the expired and unsupported; the next run, given the first's state, asks
    only for what was added and still publishes the earlier indicators."""
    with medallion(tmp_path) as server:
        config = validate_config_document({
            "sources": [{
                "name": "intel", "url": server.root, "format": "taxii",
                "collection": server.collection_title, "page_size": 4,
                "basic_auth": {"username": "reader", "password": "${secret:TAXII_PASSWORD}"},
            }],
            "pipeline": {"outputs": ["ip", "fqdn", "url"]},
        })
        settings = EngineSettings(
            ssrf_allow_cidrs=("127.0.0.0/8",), secrets={"TAXII_PASSWORD": READER_PASSWORD},
            now=NOW,
        )
        first = asyncio.run(run_pipeline(config, settings))
        assert first.ok, first.errors
        report = first.report["sources"][0]
        assert report["invalid"] == {"unsupported_pattern": 2}
        assert report["expired"] == 1  # 185.220.101.99, past its valid_until
        assert report["requests"] == 1 + 3
        published = {e.value for entries in first.feeds.values() for e in entries}
        assert {"185.220.101.10", "185.220.101.7", "evil-taxii.example"} <= published
        assert "185.220.101.99" not in published

        server.add_objects([indicator(20, "[domain-name:value = 'second-run.example']")])
        mark = server.mark()
        second = asyncio.run(run_pipeline(config, settings, state=first.state))
        assert second.ok, second.errors
        pulls = [line for line in server.requests()[mark:] if "/objects/" in line]
        assert len(pulls) == 1
        assert "added_after=2025-06-02T00:00:09.000000Z" in unquote(pulls[0])
        assert second.report["sources"][0]["lines"] == 1
        again = {e.value for entries in second.feeds.values() for e in entries}
        assert again == published | {"second-run.example"}
