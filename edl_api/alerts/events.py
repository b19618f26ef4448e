"""Events into the outbox: one `WebhookDelivery` per webhook of the profile that takes the
event, written in the caller's transaction (a run's own, so an event exists exactly when
the state it reports was committed). Sending is the worker's (`alerts.delivery`): nothing
here waits on the network.

The run hooks never fail the caller: they run in a savepoint and log what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.alerts.formats import short
from edl_api.engine.config import ConfigError, load_config
from edl_api.models import AlertEpisode, Pipeline, PipelineRun, Webhook, WebhookDelivery, utcnow

logger = logging.getLogger("edl_api.alerts")

# A run that ended like this is news (cancelled is the operator's own doing).
FAILED_STATES = frozenset({"failed", "timed_out", "interrupted"})
DEFAULT_ALERT_AFTER_FAILURES = 3
SOURCE_KEY = "source_failing:{pipeline_id}:{name}"
# How `feeds.guard` ends a reason when it kept a served feed (shrink, empty result).
HELD_MARK = "the last good feed stays"


@dataclass(frozen=True)
class Alert:
    """One event about one profile, before it is fanned out to its webhooks."""

    event: str
    profile_id: int
    summary: str
    detail: str = ""
    pipeline_id: int | None = None
    run_id: int | None = None
    device_id: int | None = None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event, "profile_id": self.profile_id}
        for name in ("pipeline_id", "run_id", "device_id"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out |= {"summary": short(self.summary, 300), "detail": short(self.detail),
                "at": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
        return out


async def subscriptions(session: AsyncSession, profile_ids: Iterable[int]) -> dict[int, set[str]]:
    """Every event some webhook of each profile takes (profiles without webhooks absent)."""
    ids = sorted(set(profile_ids))
    if not ids:
        return {}
    rows = await session.execute(
        select(col(Webhook.profile_id), col(Webhook.events))
        .where(col(Webhook.profile_id).in_(ids))
    )
    wanted: dict[int, set[str]] = {}
    for profile_id, events in rows.all():
        wanted.setdefault(int(profile_id), set()).update(events or [])
    return wanted


async def enqueue(session: AsyncSession, alert: Alert) -> int:
    """A pending delivery for every webhook of the profile that takes this event."""
    rows = await session.execute(
        select(col(Webhook.id), col(Webhook.events))
        .where(col(Webhook.profile_id) == alert.profile_id)
    )
    payload = alert.payload()
    made = 0
    for webhook_id, events in rows.all():
        if alert.event in (events or []):
            session.add(WebhookDelivery(webhook_id=int(webhook_id or 0), event=alert.event,
                                        payload=payload))
            made += 1
    if made:
        logger.info("alert %s for profile %s: %d deliveries queued", alert.event,
                    alert.profile_id, made)
    return made


async def _guarded(session: AsyncSession, what: str, step: Callable[[], Awaitable[None]]) -> None:
    """`step` in a savepoint: whatever it raises is logged, the caller's transaction goes on."""
    await session.flush()  # the caller's own changes fail (or not) outside the savepoint
    try:
        async with session.begin_nested():
            await step()
    except Exception:
        logger.exception("alerts: %s left out", what)


async def _pipeline_name(session: AsyncSession, pipeline_id: int) -> str:
    pipeline = await session.get(Pipeline, pipeline_id)
    return f"{pipeline.name} (#{pipeline_id})" if pipeline is not None else f"#{pipeline_id}"


# --------------------------------------------------------------------------- run hooks


async def run_finished(session: AsyncSession, run: PipelineRun, report: dict[str, Any]) -> None:
    """A run's final state is being committed in `session`: run_failed, source_failing."""

    async def step() -> None:
        wanted = (await subscriptions(session, [run.profile_id])).get(run.profile_id, set())
        if not wanted:
            return
        name = await _pipeline_name(session, run.pipeline_id)
        if run.state in FAILED_STATES and "run_failed" in wanted:
            await enqueue(session, Alert(
                "run_failed", run.profile_id,
                f"run {run.id} of pipeline {name} ended {run.state}",
                "; ".join(str(e) for e in run.errors or []) or str(run.state),
                pipeline_id=run.pipeline_id, run_id=run.id,
            ))
        if run.mode == "full" and "source_failing" in wanted:
            await _count_source_failures(session, run, report, name)

    await _guarded(session, f"run {run.id}'s events", step)


async def run_ended(session: AsyncSession, run_id: int) -> None:
    """A run was ended outside the dispatcher's outcome (recovery: its worker died)."""
    run = await session.get(PipelineRun, run_id)
    if run is not None:
        await session.refresh(run)
        await run_finished(session, run, {})


async def feeds_held(session: AsyncSession, run: PipelineRun) -> None:
    """guard_held: the guard kept the last good feed of a full run instead of this run's
    (in publish's own transaction, from the run's `counts.feeds` it just wrote). A type
    that never had entries (held as "the first result is empty") is not news."""
    held = [
        f"{kind}: {feed['reason']}"
        for kind, feed in sorted((run.counts.get("feeds") or {}).items())
        if not feed.get("published") and HELD_MARK in str(feed.get("reason") or "")
    ]
    if run.mode != "full" or not held:
        return

    async def step() -> None:
        name = await _pipeline_name(session, run.pipeline_id)
        await enqueue(session, Alert(
            "guard_held", run.profile_id,
            f"run {run.id} of pipeline {name}: the guard held {len(held)} feed(s); "
            "firewalls keep the last good list", "; ".join(held),
            pipeline_id=run.pipeline_id, run_id=run.id,
        ))

    await _guarded(session, f"run {run.id}'s guard_held", step)


def _thresholds(snapshot: str) -> dict[str, int]:
    """Each source's `alert_after_failures` in the run's config (parsed only when a source
    failed; a config that no longer parses gets the default)."""
    try:
        config = load_config(snapshot)
    except (ConfigError, ValueError):
        return {}
    return {
        source.name: int(getattr(source, "alert_after_failures", DEFAULT_ALERT_AFTER_FAILURES))
        for source in config.sources
    }


async def _count_source_failures(
    session: AsyncSession, run: PipelineRun, report: dict[str, Any], name: str
) -> None:
    """source_failing once a source failed `alert_after_failures` full runs in a row; its
    episode (and count) ends with its next good fetch."""
    sources = [s for s in report.get("sources") or [] if isinstance(s, dict) and s.get("name")]
    failed = {str(s["name"]): str(s["error"]) for s in sources if s.get("error")}
    fine = [SOURCE_KEY.format(pipeline_id=run.pipeline_id, name=s["name"])
            for s in sources if not s.get("error")]
    if fine:
        await session.execute(delete(AlertEpisode).where(
            col(AlertEpisode.profile_id) == run.profile_id, col(AlertEpisode.key).in_(fine),
        ))
    if not failed:
        return
    thresholds = await asyncio.to_thread(_thresholds, run.config_snapshot)
    keys = {SOURCE_KEY.format(pipeline_id=run.pipeline_id, name=n): n for n in failed}
    episodes = {
        row.key: row for row in (await session.execute(
            select(AlertEpisode).where(
                col(AlertEpisode.profile_id) == run.profile_id,
                col(AlertEpisode.key).in_(list(keys)),
            )
        )).scalars()
    }
    now = utcnow()
    for key, source in keys.items():
        episode = episodes.get(key)
        if episode is None:
            episode = AlertEpisode(profile_id=run.profile_id, key=key, count=0)
            session.add(episode)
        episode.count += 1
        episode.updated_at = now
        after = thresholds.get(source, DEFAULT_ALERT_AFTER_FAILURES)
        if episode.count >= after and episode.fired_at is None:
            episode.fired_at = now
            await enqueue(session, Alert(
                "source_failing", run.profile_id,
                f"source {source} of pipeline {name} failed {episode.count} runs in a row",
                f"latest (run {run.id}): {failed[source]}",
                pipeline_id=run.pipeline_id, run_id=run.id,
            ))
    await session.flush()
