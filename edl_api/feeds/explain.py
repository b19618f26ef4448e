"""Explain: "why is X (not) listed" for each pipeline of a profile, from stored records.

Listed: the indicator store's match (the entry itself or one covering it: a network, a
wildcard), with the vendor formats whose renderer leaves that entry out. Not listed: the
latest run's explain record (which sources carried it, their raw line, the step that
removed it), a feed the guard held, or a failed run. Nothing is re-run.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.engine.entries import BASE_TYPES
from edl_api.engine.explain import FILE_NAME, ExplainRecord, lookup
from edl_api.engine.indicators import ip_kind
from edl_api.errors import NotFound
from edl_api.feeds import grammars
from edl_api.feeds.service import InvalidIndicator, search, search_candidates
from edl_api.models import Artifact, HostedFeed, Pipeline, PipelineRun, RunExplain, utcnow

logger = logging.getLogger("edl_api.feeds")


class Drop(BaseModel):
    step: str  # allowlist, reserved, min_prefix, public_suffix, exclude_regex, …
    detail: str
    entry: str  # the dropped entry: the indicator itself or one that would cover it
    indicator_type: str
    covers: bool  # the entry would have covered the indicator (a network, a wildcard)
    sources: list[str]
    first_line: dict[str, Any] | None = None  # {"source", "line"} when known
    feed: str | None = None  # the feed a max_entries cut applies to


class ListedEntry(BaseModel):
    entry: str
    indicator_type: str
    sources: list[str]
    confidence: int
    run_id: int | None
    # Vendor format -> why its renderer leaves this entry out (`?format=` of the feed).
    dropped_by_format: dict[str, str]


class FeedExplain(BaseModel):
    feed: str
    listed: bool
    entries: list[ListedEntry]
    why: list[Drop]  # empty when listed


class PipelineExplain(BaseModel):
    pipeline_id: int
    pipeline_name: str
    explained_run_id: int | None  # the run whose record answers
    run_state: str | None
    feeds: list[FeedExplain]


class ExplainResult(BaseModel):
    indicator: str
    pipelines: list[PipelineExplain]


# --- storing ---------------------------------------------------------------------------


def _read(out_dir: Path) -> bytes | None:
    path = out_dir / FILE_NAME
    return path.read_bytes() if path.is_file() else None


async def store_record(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int, out_dir: Path
) -> None:
    """Keep a finished run's explain record (failed, dry and held runs too). Never raises:
    a run's outcome does not depend on it."""
    try:
        data = await asyncio.to_thread(_read, out_dir)
        if data is None:
            return
        entries = (await asyncio.to_thread(ExplainRecord.from_bytes, data)).entries
        async with sessionmaker() as session, session.begin():
            run = await session.get(PipelineRun, run_id)
            if run is None:
                return
            session.add(RunExplain(run_id=run_id, pipeline_id=run.pipeline_id, entries=entries,
                                   size=len(data), content_gzip=data, created_at=utcnow()))
    except Exception:
        logger.exception("run %s: explain record not stored", run_id)


# --- answering -------------------------------------------------------------------------


def _format_drops(indicator_type: str, value: str) -> dict[str, str]:
    kind = (ip_kind(value) or indicator_type) if indicator_type in ("ipv4", "ipv6", "cidr") \
        else indicator_type
    out = {}
    for fmt, grammar in grammars.GRAMMARS.items():
        reason = grammars.check(grammar, kind, value)
        if reason is not None:
            out[fmt] = str(reason)
    return out


def _in_artifact(artifact: Artifact, wanted: set[bytes]) -> bool:
    return bool(wanted & set(bytes(artifact.content).split(b"\n")))


async def _latest(session: AsyncSession, pipeline_id: int) -> tuple[PipelineRun | None, Any]:
    """The newest run with a record, and the record (None when no run left one)."""
    row = (await session.execute(
        select(RunExplain, PipelineRun).join(PipelineRun, col(PipelineRun.id) == RunExplain.run_id)
        .where(col(RunExplain.pipeline_id) == pipeline_id)
        .order_by(col(RunExplain.run_id).desc()).limit(1)
    )).first()
    if row is None:
        return None, None
    stored, run = row
    record = await asyncio.to_thread(ExplainRecord.from_bytes, stored.content_gzip)
    return run, record


async def explain(
    session: AsyncSession, principal: Principal, profile_id: int, indicator: str,
    pipeline_id: int | None = None,
) -> ExplainResult:
    principal.require_profile(profile_id)
    text = indicator.strip()
    query = select(Pipeline).where(
        col(Pipeline.profile_id) == profile_id,
        principal.scope_filter(col(Pipeline.profile_id), col(Pipeline.id)),
        col(Pipeline.deleted_at).is_(None),
    ).order_by(col(Pipeline.id))
    if pipeline_id is not None:
        query = query.where(col(Pipeline.id) == pipeline_id)
    pipelines = (await session.execute(query)).scalars().all()
    if pipeline_id is not None and not pipelines:
        raise NotFound("not found")
    try:
        matches = (await search(session, principal, profile_id, text)).matches
        wanted = {v.encode() for _, v in search_candidates(text)[1]}
        valid = True
    except InvalidIndicator:  # an invalid token may still be in a record: say so
        matches, wanted, valid = [], set(), False
    answers = []
    seen_anywhere = valid
    for pipeline in pipelines:
        assert pipeline.id is not None
        run, record = await _latest(session, pipeline.id)
        findings = lookup(record, text) if record is not None else []
        seen_anywhere = seen_anywhere or bool(findings)
        hosted = {f.indicator_type for f in (await session.execute(
            select(HostedFeed).where(col(HostedFeed.pipeline_id) == pipeline.id)
        )).scalars()}
        outputs = list((run.report.get("options") or {}).get("outputs") or []) if run else []
        held: dict[str, Artifact] = {}
        if run is not None:
            held = {a.indicator_type: a for a in (await session.execute(
                select(Artifact).where(col(Artifact.run_id) == run.id,
                                       col(Artifact.published).is_(False))
            )).scalars()}
        feeds = []
        for feed in dict.fromkeys([*sorted(hosted), *outputs]):
            bases = BASE_TYPES.get(feed, (feed,))
            listed = [
                ListedEntry(entry=m.entry, indicator_type=m.indicator_type, sources=m.sources,
                            confidence=m.confidence, run_id=m.run_id,
                            dropped_by_format=_format_drops(m.indicator_type, m.entry))
                for m in matches if m.pipeline_id == pipeline.id and m.indicator_type in bases
            ]
            why = [] if listed else _why(feed, bases, findings, matches, pipeline.id, run,
                                         held.get(feed), wanted)
            feeds.append(FeedExplain(feed=feed, listed=bool(listed), entries=listed, why=why))
        answers.append(PipelineExplain(
            pipeline_id=pipeline.id, pipeline_name=pipeline.name,
            explained_run_id=run.id if run else None, run_state=run.state if run else None,
            feeds=feeds,
        ))
    if not seen_anywhere:
        raise InvalidIndicator("not an IP, network, domain or URL, and no run recorded it "
                               "as an invalid entry")
    return ExplainResult(indicator=text, pipelines=answers)


def _why(
    feed: str, bases: tuple[str, ...], findings: list[dict[str, Any]], matches: list[Any],
    pipeline_id: int, run: PipelineRun | None, held: Artifact | None, wanted: set[bytes],
) -> list[Drop]:
    why = [
        Drop(step=f["step"], detail=f["detail"], entry=f["value"], indicator_type=f["type"],
             covers=f["covers"], sources=f["sources"], first_line=f["first_line"],
             feed=f["feed"])
        for f in findings
        if (f["feed"] is None or f["feed"] == feed)
        and (f["type"] in bases or f["type"] == "invalid" or f["covers"])
    ]
    if why:
        return why
    if held is not None and held.pruned_at is None and _in_artifact(held, wanted):
        return [Drop(step="guard", detail=f"run {held.run_id} made it, but its {feed} feed "
                     f"was not published: {held.reason}", entry=held.indicator_type,
                     indicator_type=feed, covers=False, sources=[])]
    elsewhere = [m for m in matches if m.pipeline_id == pipeline_id]
    if feed in ("ipv4", "ipv6") and any(m.indicator_type == "cidr" for m in elsewhere):
        return [Drop(step="covered_by_network", detail=f"the {feed} feed leaves out hosts "
                     "inside a network of the cidr feed", entry=elsewhere[0].entry,
                     indicator_type="cidr", covers=True, sources=elsewhere[0].sources)]
    if run is not None and run.state != "succeeded":
        errors = "; ".join(str(e) for e in (run.errors or [])[:3])
        return [Drop(step="run_failed", detail=f"run {run.id} {run.state}, nothing of it was "
                     f"published: {errors}", entry="", indicator_type=feed, covers=False,
                     sources=[])]
    detail = "no source carried it" if run is not None else "no run has recorded its drops yet"
    return [Drop(step="not_in_sources", detail=detail, entry="", indicator_type=feed,
                 covers=False, sources=[])]
