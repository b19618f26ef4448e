"""Views over hosted feeds: active pipelines, indicator search, run artifacts."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.engine.indicators import BITS, classify, ip_network, key_to_text, url_host
from edl_api.errors import AppError, NotFound, Unprocessable
from edl_api.feeds.cache import FeedBody, prepare
from edl_api.feeds.content import gzip_bytes, sha256_hex
from edl_api.feeds.entries_reader import as_json_lines, is_grouped
from edl_api.feeds.provenance import PROVENANCE, decompress
from edl_api.feeds.publish import source_feed
from edl_api.feeds.schemas import (
    ActivePipeline,
    ActivePipelines,
    FeedState,
    LastRun,
    SearchMatch,
    SearchResult,
)
from edl_api.models import Artifact, HostedFeed, Indicator, Pipeline, PipelineRun
from edl_api.settings import Settings

MAX_SEARCH_MATCHES = 1000
# Values one search may look up: each is one key probe per pipeline in scope (`_probe`),
# and a wide range (`::1-ffff:…:fffe`) would expand to thousands of them.
MAX_SEARCH_TERMS = 500


class ArtifactPruned(AppError):
    code = "artifact_pruned"
    status_code = 410


class InvalidIndicator(Unprocessable):
    code = "invalid_indicator"


# --- active pipelines ---------------------------------------------------------------------


async def active_pipelines(
    session: AsyncSession, principal: Principal, profile_id: int, settings: Settings
) -> ActivePipelines:
    principal.require_profile(profile_id)
    pipelines = (
        await session.execute(
            select(Pipeline).where(
                col(Pipeline.profile_id) == profile_id,
                principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id)),
                col(Pipeline.deleted_at).is_(None), col(Pipeline.is_active).is_(True),
            ).order_by(col(Pipeline.id))
        )
    ).scalars().all()
    ids = [p.id for p in pipelines]
    feeds: dict[int, dict[str, FeedState]] = {}
    for feed in (
        await session.execute(select(HostedFeed).where(col(HostedFeed.pipeline_id).in_(ids)))
    ).scalars():
        feeds.setdefault(feed.pipeline_id, {})[feed.indicator_type] = FeedState(
            count=feed.count, sha256=feed.sha256, updated_at=feed.updated_at, run_id=feed.run_id
        )
    items = []
    for pipeline in pipelines:
        assert pipeline.id is not None
        if pipeline.id not in feeds:
            continue  # hosts nothing yet
        last = (
            await session.execute(
                select(col(PipelineRun.id), col(PipelineRun.state), col(PipelineRun.finished_at))
                .where(col(PipelineRun.pipeline_id) == pipeline.id)
                .order_by(col(PipelineRun.id).desc()).limit(1)
            )
        ).first()
        next_run = await _next_run_at(session, pipeline, settings)
        items.append(ActivePipeline(
            pipeline_id=pipeline.id, name=pipeline.name,
            profile_config_id=pipeline.profile_config_id, feeds=feeds[pipeline.id],
            last_run=LastRun(id=last[0], state=last[1], finished_at=last[2]) if last else None,
            next_run_at=next_run, scheduled=next_run is not None,
        ))
    return ActivePipelines(items=items)


async def _next_run_at(session: AsyncSession, pipeline: Pipeline, settings: Settings) -> Any:
    try:
        from edl_api.runs.scheduler import next_run_at
    except ImportError:  # the scheduler is not there: nothing is scheduled
        return None
    return await next_run_at(session, pipeline, settings)


# --- search ---------------------------------------------------------------------------


def _supernets(version: int, number: int, below: int) -> list[str]:
    """Every network (prefix shorter than `below`) that contains `number`."""
    bits = BITS[version]
    out = []
    for prefixlen in range(below):
        network = number & ~((1 << (bits - prefixlen)) - 1) if prefixlen else 0
        kind = "cidr4" if version == 4 else "cidr6"
        out.append(key_to_text(kind, (network, prefixlen)))
    return out


def _name_candidates(name: str) -> list[tuple[str, str]]:
    out = [("fqdn", name)]
    labels = name.removeprefix("*.").split(".")
    for index in range(1, len(labels)):
        out.append(("fqdn", "*." + ".".join(labels[index:])))
    return out


def _address_candidates(kind: str, value: str) -> list[tuple[str, str]]:
    network = ip_network(value)
    assert network is not None
    version, number, prefixlen = network
    out = [(kind, value)]
    out.extend(("cidr", net) for net in _supernets(version, number, prefixlen))
    return out


def search_candidates(indicator: str) -> tuple[str, list[tuple[str, str]]]:
    """How the query reads, and every (type, stored value) that matches it."""
    classified = classify(indicator)
    if not classified.indicators:
        raise InvalidIndicator(
            f"not an IP, network, domain or URL ({classified.reason})"
        )
    first = classified.indicators[0]
    candidates: list[tuple[str, str]] = []
    for item in classified.indicators:
        if item.indicator_type in ("ipv4", "ipv6", "cidr"):
            candidates.extend(_address_candidates(item.indicator_type, item.value))
        elif item.indicator_type == "fqdn":
            candidates.extend(_name_candidates(item.value))
        else:
            candidates.append(("url", item.value))
            host = url_host(item.value)
            if host is not None:
                kind, key = host
                text = key_to_text(kind, key)
                if kind == "fqdn":
                    candidates.extend(_name_candidates(text))
                else:
                    candidates.extend(_address_candidates(kind, text))
    return first.indicator_type, list(dict.fromkeys(candidates))


# Every (pipeline, candidate) pair is one probe of the key, from the lists as arrays: one
# short statement whatever the sizes. PostgreSQL: OFFSET 0 keeps the LATERAL subquery
# from being planned as a join (right after a bulk load, without statistics, a scan);
# SQLite: CROSS JOIN fixes the loop order, the indicators innermost.
_PG_PROBE = text(
    "SELECT i.* FROM unnest(CAST(:pipelines AS integer[])) AS p(pipeline_id) "
    "CROSS JOIN unnest(CAST(:kinds AS text[]), CAST(:values AS text[])) AS c(kind, value) "
    "CROSS JOIN LATERAL (SELECT * FROM indicators WHERE pipeline_id = p.pipeline_id "
    "AND indicator_type = c.kind AND value = c.value OFFSET 0) AS i"
)
_SQLITE_PROBE = text(
    "SELECT i.* FROM json_each(:pipelines) AS p CROSS JOIN json_each(:pairs) AS c "
    "CROSS JOIN indicators AS i WHERE i.pipeline_id = p.value "
    "AND i.indicator_type = json_extract(c.value, '$[0]') "
    "AND i.value = json_extract(c.value, '$[1]')"
)


async def _probe(
    session: AsyncSession, pipelines: list[int], pairs: list[tuple[str, str]]
) -> list[Indicator]:
    """The stored rows of these pipelines for these (type, value) candidates."""
    if (await session.connection()).dialect.name == "postgresql":
        statement = _PG_PROBE.bindparams(
            pipelines=pipelines, kinds=[k for k, _ in pairs], values=[v for _, v in pairs]
        )
    else:
        statement = _SQLITE_PROBE.bindparams(
            pipelines=orjson.dumps(pipelines).decode(), pairs=orjson.dumps(pairs).decode()
        )
    return list((await session.execute(select(Indicator).from_statement(statement))).scalars())


async def search(
    session: AsyncSession, principal: Principal, profile_id: int, indicator: str
) -> SearchResult:
    principal.require_profile(profile_id)
    text = indicator.strip()
    if not text or len(text) > 2048:
        raise InvalidIndicator("give one indicator of at most 2048 characters")
    kind, candidates = search_candidates(text)
    wanted = set(candidates)
    values = sorted({v for _, v in candidates})
    if len(values) > MAX_SEARCH_TERMS:
        raise InvalidIndicator(
            f"this search expands into {len(values)} networks and names to look up; at most "
            f"{MAX_SEARCH_TERMS}: search a narrower range"
        )
    # The profile's live pipelines in scope first (a few rows), then one probe of the
    # (pipeline, type, value) key per candidate and pipeline (`_probe`).
    names = {
        pid: name for pid, name in (
            await session.execute(
                select(col(Pipeline.id), col(Pipeline.name)).where(
                    col(Pipeline.profile_id) == profile_id,
                    principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id)),
                    col(Pipeline.deleted_at).is_(None), col(Pipeline.is_active).is_(True),
                )
            )
        )
        if pid is not None
    }
    hits: list[Indicator] = []
    if names:
        hits = await _probe(session, sorted(names), sorted(wanted))
    found = sorted(
        ((row, names[row.pipeline_id]) for row in hits),  # only these pipelines probed
        key=lambda pair: (pair[0].pipeline_id, pair[0].indicator_type, pair[0].value),
    )[:MAX_SEARCH_MATCHES]
    feeds: dict[int, dict[str, HostedFeed]] = {}
    if any(row.run_id is None for row, _ in found):
        for feed in (
            await session.execute(select(HostedFeed).where(
                col(HostedFeed.pipeline_id).in_({row.pipeline_id for row, _ in found})
            ))
        ).scalars():
            feeds.setdefault(feed.pipeline_id, {})[feed.indicator_type] = feed
    matches = []
    for row, name in found:
        run_id, last_seen = row.run_id, row.last_seen
        if run_id is None:  # present in the hosted feed: its run and time stand for it
            hosted = source_feed(feeds.get(row.pipeline_id, {}), row.indicator_type)
            if hosted is not None:
                run_id, last_seen = hosted.run_id, max(last_seen, hosted.updated_at)
        matches.append(SearchMatch(
            pipeline_id=row.pipeline_id, pipeline_name=name, indicator_type=row.indicator_type,
            entry=row.value, run_id=run_id, sources=row.sources, tags=row.tags,
            confidence=row.confidence, first_seen=row.first_seen, last_seen=last_seen,
            retained=row.run_id is not None,
        ))
    return SearchResult(indicator=text, kind=kind, matches=matches)


# --- run artifacts -------------------------------------------------------------------------


async def run_artifact(
    session: AsyncSession, principal: Principal, run_id: int, indicator_type: str
) -> tuple[FeedBody, Artifact]:
    run = (
        await session.execute(
            select(col(PipelineRun.id)).where(
                col(PipelineRun.id) == run_id,
                principal.scope_filter(col(PipelineRun.profile_id), col(PipelineRun.pipeline_id)),
            )
        )
    ).first()
    if run is None:
        raise NotFound("not found")
    artifact = (
        await session.execute(
            select(Artifact).where(
                col(Artifact.run_id) == run_id, col(Artifact.indicator_type) == indicator_type
            )
        )
    ).scalar_one_or_none()
    if artifact is None:
        raise NotFound("this run stored no artifact of that type")
    if artifact.pruned_at is not None:
        raise ArtifactPruned(
            f"this artifact's bytes were dropped on {artifact.pruned_at:%Y-%m-%d %H:%M} UTC "
            "(EDL_ARTIFACT_KEEP_RUNS keeps the newest runs' and what is served)"
        )
    if artifact.indicator_type == PROVENANCE:
        body = await asyncio.to_thread(_provenance_download, artifact)
    else:
        body = FeedBody(artifact.sha256, artifact.content, artifact.content_gzip, artifact.count)
    prepare(body, run_ids=[run_id], last_modified=artifact.created_at)
    return body, artifact


def _provenance_download(artifact: Artifact) -> FeedBody:
    """A provenance artifact is stored compressed only, in the engine's grouped form since
    the grouped entries file: it is downloaded as JSON Lines, one whole entry a line."""
    stored = decompress(artifact.content_gzip)
    if not is_grouped(stored):  # a legacy entries.jsonl, as it was stored
        return FeedBody(artifact.sha256, stored, artifact.content_gzip, artifact.count)
    lines = as_json_lines(stored)
    return FeedBody(sha256_hex(lines), lines, gzip_bytes(lines), artifact.count)
