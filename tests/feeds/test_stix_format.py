"""`?format=stix`: a STIX 2.1 bundle of indicators that stix2-validator accepts, with ids
that survive a re-publish, patterns escaped and parsed by the reference pattern parser,
labels from tags. Feeds are published by real runs of inline sources."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from stix2patterns.validator import run_validator
from stix2validator import ValidationOptions, validate_instance, validate_string

from edl_api.engine.entries import FeedEntry
from edl_api.feeds.render import RenderOptions, render
from edl_api.feeds.stix import NAMESPACE, indicator_id, stix_pattern
from tests.factories import create_config, create_pipeline, make_profile
from tests.helpers import basic, expect, h, run_to_end

# The engine refuses a URL with a backslash (`bad_url`): that escape is tested on the
# renderer directly (`test_a_backslash_and_a_quote_are_escaped`).
URLS = ["evil.example/a'b", "evil.example/it''s", "bad.example/x?y=1"]


def _yaml(
    values: dict[str, list[str]], tags: list[str] | None = None, allow_empty: bool = False
) -> str:
    sources = []
    for name, listed in values.items():
        sources.append(
            f"  - name: {name}\n    values: {json.dumps(listed)}\n"
            f"    tags: {json.dumps(tags or [])}\n    confidence: 80\n"
        )
    guard = "pipeline:\n  guard:\n    allow_empty: true\n" if allow_empty else ""
    return "sources:\n" + "".join(sources) + guard


async def _published(
    client: httpx.AsyncClient, label: str, values: dict[str, list[str]],
    tags: list[str] | None = None, allow_empty: bool = False,
) -> tuple[int, str, int, int]:
    """(profile id, profile key, config id, pipeline id) after one persisted run."""
    profile_id, key = await make_profile(client, f"stix-{label}")
    config = await create_config(client, key, profile_id, f"stix-{label}",
                                 _yaml(values, tags, allow_empty))
    pipeline = await create_pipeline(client, key, config["id"], f"stix-{label}")
    run = await run_to_end(client, pipeline["id"], key, persist=True)
    assert run["state"] == "succeeded", run
    return profile_id, key, config["id"], pipeline["id"]


def _valid(body: str) -> dict[str, Any]:
    results = validate_string(body, ValidationOptions(version="2.1"))
    assert results.is_valid, f"errors: {results.errors}; warnings: {results.warnings}"
    bundle: dict[str, Any] = json.loads(body)
    return bundle


async def _stix(client: httpx.AsyncClient, pipeline_id: int, kind: str, key: str) -> httpx.Response:
    response = await client.get(f"/pipelines/{pipeline_id}/edl/{kind}?format=stix",
                                headers=basic(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/stix+json;version=2.1"
    return response


async def test_every_feed_type_is_a_valid_bundle(client: httpx.AsyncClient) -> None:
    values = {
        "hosts": ["45.33.32.7", "2a03:2880:f12f::1", "45.33.33.0/24", "2a03:2880:1::/48"],
        "names": ["evil.example", "*.bad.example"],
        "links": URLS,
    }
    _, key, _, pipeline_id = await _published(client, "types", values, tags=["botnet", "tlp:red"])
    seen: dict[str, str] = {}
    for kind in ("ipv4", "ipv6", "cidr", "fqdn", "url", "ip"):
        bundle = _valid((await _stix(client, pipeline_id, kind, key)).text)
        assert bundle["type"] == "bundle"
        for found in bundle["objects"]:
            assert run_validator(found["pattern"], "2.1") == [], found["pattern"]
            assert found["labels"] == ["botnet", "tlp:red"]
            assert found["confidence"] == 80
            assert found["created"] == found["modified"] == found["valid_from"]
            assert found["created"].endswith("Z")
            assert len(found["created"]) == 24
            assert found["x_edl_sources"]
            seen[found["name"]] = found["pattern"]
    assert seen["45.33.32.7"] == "[ipv4-addr:value = '45.33.32.7']"
    assert seen["2a03:2880:f12f::1"] == "[ipv6-addr:value = '2a03:2880:f12f::1']"
    assert seen["45.33.33.0/24"] == "[ipv4-addr:value = '45.33.33.0/24']"
    assert seen["2a03:2880:1::/48"] == "[ipv6-addr:value = '2a03:2880:1::/48']"
    assert seen["*.bad.example"] == "[domain-name:value LIKE '%.bad.example']"
    assert seen["evil.example/a'b"] == "[url:value = 'evil.example/a\\'b']"
    assert seen["evil.example/it''s"] == "[url:value = 'evil.example/it\\'\\'s']"


async def test_ids_are_stable_across_publishes_and_a_removed_value_leaves(
    client: httpx.AsyncClient,
) -> None:
    kept = ["45.33.32.7", "45.33.32.8"]
    profile_id, key, config_id, pipeline_id = await _published(
        client, "stable", {"hosts": [*kept, "45.33.32.9"]}
    )
    first = _valid((await _stix(client, pipeline_id, "ipv4", key)).text)
    ids = {o["name"]: o["id"] for o in first["objects"]}
    assert ids["45.33.32.9"] == indicator_id("ipv4", "45.33.32.9")
    # The same values again: the same bytes, bundle id included (no churn).
    run = await run_to_end(client, pipeline_id, key, persist=True)
    assert run["state"] == "succeeded"
    again = await _stix(client, pipeline_id, "ipv4", key)
    assert again.json() == first
    # One value dropped: its id goes, the others keep theirs and their times.
    patched = await client.put(
        f"/profiles/{profile_id}/configs/{config_id}",
        json={"yaml": _yaml({"hosts": kept})}, headers=h(key),
    )
    await expect(patched)
    run = await run_to_end(client, pipeline_id, key, persist=True)
    assert run["state"] == "succeeded", run
    later = _valid((await _stix(client, pipeline_id, "ipv4", key)).text)
    assert {o["name"]: o["id"] for o in later["objects"]} == {v: ids[v] for v in kept}
    before = {o["id"]: o["created"] for o in first["objects"]}
    assert all(before[o["id"]] == o["created"] for o in later["objects"])
    assert later["id"] != first["id"]


async def test_the_global_feed_and_an_empty_feed_are_valid(client: httpx.AsyncClient) -> None:
    _, key, _, _ = await _published(client, "global", {"hosts": ["45.33.32.20"]})
    r = await client.get("/edl/ipv4?format=stix", headers=h(key))
    assert r.status_code == 200, r.text
    bundle = _valid(r.text)
    assert [o["name"] for o in bundle["objects"]] == ["45.33.32.20"]
    _, key, _, pipeline_id = await _published(client, "empty", {"names": ["only.example"]},
                                           allow_empty=True)
    empty = _valid((await _stix(client, pipeline_id, "ipv4", key)).text)
    assert "objects" not in empty


def test_a_backslash_and_a_quote_are_escaped() -> None:
    entries = [FeedEntry("a.example/back\\sl'ash", "url", ["feed"], ["tag"], 70,
                         datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC))]
    rendered = render(entries, "url", "stix", RenderOptions(published_at=datetime.now(UTC)))
    bundle = _valid(rendered.body.decode())
    (found,) = bundle["objects"]
    assert found["pattern"] == "[url:value = 'a.example/back\\\\sl\\'ash']"
    assert run_validator(found["pattern"], "2.1") == []
    assert found["valid_from"] == "2026-01-02T03:04:05.678Z"


def test_patterns_escape_and_parse() -> None:
    assert indicator_id("url", "a.example/x") == \
        f"indicator--{uuid.uuid5(NAMESPACE, 'url:a.example/x')}"
    for kind, value in (("url", "a.example/it's"), ("url", "a.example/\\'"),
                        ("fqdn", "*.x.example"), ("cidr", "10.0.0.0/8")):
        pattern = stix_pattern(kind, value)
        assert run_validator(pattern, "2.1") == [], pattern
    results = validate_instance({
        "type": "indicator", "spec_version": "2.1", "id": indicator_id("url", "a"),
        "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
        "pattern": stix_pattern("url", "a.example/it's"), "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00.000Z", "x_edl_sources": ["feed"],
    }, ValidationOptions(version="2.1"))
    assert results.is_valid, (results.errors, results.warnings)
