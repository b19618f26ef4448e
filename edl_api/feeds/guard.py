"""The guard: whether a run's feed may replace what firewalls are served now."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edl_api.feeds.indexing import PreparedFeed
from edl_api.models import HostedFeed, PipelineRun

logger = logging.getLogger("edl_api.feeds")


@dataclass
class Decision:
    published: bool
    reason: str | None = None


@dataclass(frozen=True)
class PublishOptions:
    """The guard and retention options of the run's config, as the engine reported them
    (`report.json` → `options`): the config snapshot is not parsed again here."""

    max_shrink_percent: float = 50.0
    allow_empty: bool = False
    retain_missing_days: int = 0

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> PublishOptions:
        options = report.get("options")
        if not isinstance(options, dict):
            logger.warning("engine report without options: the default guard applies")
            return cls()
        guard = options.get("guard") or {}
        return cls(
            float(guard.get("max_shrink_percent", cls.max_shrink_percent)),
            bool(guard.get("allow_empty", cls.allow_empty)),
            int(options.get("retain_missing_days", cls.retain_missing_days)),
        )


def guard_decision(
    run: PipelineRun, live: bool, feed: PreparedFeed, current: HostedFeed | None,
    options: PublishOptions,
) -> Decision:
    """Whether `feed` may replace what is served now; the reason when it may not."""
    if run.mode != "full":
        return Decision(False, "dry run: artifact stored, never published")
    if not live:
        return Decision(False, "pipeline is deleted or inactive: nothing is published")
    if current is None:
        if feed.count == 0 and not options.allow_empty:
            # A first publish that is empty is far likelier a broken source or filter than
            # an empty threat list; firewalls get 503 feed_not_ready rather than nothing.
            return Decision(
                False,
                "guard: the first result is empty (pipeline.guard.allow_empty is false); "
                "the feed is not served until a run finds entries",
            )
        return Decision(True)
    if run.id is not None and current.run_id > run.id:
        return Decision(False, f"a newer run (#{current.run_id}) already published this feed")
    if current.count > 0 and feed.count == 0 and not options.allow_empty:
        return Decision(
            False,
            f"guard: the result is empty and would replace {current.count} entries "
            "(pipeline.guard.allow_empty is false); the last good feed stays",
        )
    if current.count > 0 and feed.count < current.count:
        shrink = (current.count - feed.count) * 100.0 / current.count
        if shrink > options.max_shrink_percent and not (feed.count == 0 and options.allow_empty):
            return Decision(
                False,
                f"guard: the feed would shrink by {shrink:.1f}% ({current.count} → {feed.count} "
                f"entries), more than max_shrink_percent {options.max_shrink_percent:g}; "
                "the last good feed stays",
            )
    return Decision(True)
