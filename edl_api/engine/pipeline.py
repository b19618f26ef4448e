"""The engine entry point: config in, per-type feeds and a report out.

fetch (concurrent) -> parse -> classify/normalise -> augment -> rules -> aggregate
-> per-type feeds (max_entries) -> report. Augment runs before the rules so that a
derived indicator (a URL's host, a wildcard's parent) can never dodge the allowlist.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edl_api.engine import bulk, collect
from edl_api.engine.aggregate import aggregate_family, aggregate_ipv4
from edl_api.engine.augment import augment
from edl_api.engine.build import (
    Provenance,
    cap_entries,
    host_entries,
    join_entries,
    name_entries,
    prefix_entries,
)
from edl_api.engine.collect import NOT_FOR_US, Collected
from edl_api.engine.config import PipelineConfig, SourceConfig
from edl_api.engine.drops import DropRecorder, finish_record, start_record
from edl_api.engine.entries import FeedEntry
from edl_api.engine.expiry import Aging
from edl_api.engine.explain import ExplainRecord
from edl_api.engine.limits import BudgetExceeded, ByteBudget
from edl_api.engine.observations import Observation
from edl_api.engine.parsers import ParseStats, inline_values, is_html, parse
from edl_api.engine.progress import ProgressEvent
from edl_api.engine.rules import Allowlist, Rules
from edl_api.engine.sources import (
    Fetched,
    Resolver,
    SourceError,
    SsrfPolicy,
    fetch_url,
    make_client,
    read_path,
)
from edl_api.engine.stateful import (
    ExtraTags,
    SourceFetcher,
    SourceState,
    is_stateful,
    merge_collected,
    new_state,
    parse_observations,
    previous_of,
    values_of,
)
from edl_api.engine.store import IndicatorStore, IngestStats, ingest

Progress = Callable[[ProgressEvent], None]
FETCH_CONCURRENCY = 8


@dataclass(frozen=True)
class EngineSettings:
    ssrf_allow_cidrs: tuple[str, ...] = ()
    ssrf_allow_hosts: tuple[str, ...] = ()
    source_dir: str | None = None
    total_deadline_seconds: float = 600
    # `${secret:NAME}` NAME → value: the only secrets a run's headers may expand (the run
    # layer sends exactly those its config references, from the run's own profile).
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    resolver: Resolver | None = None  # tests inject a fake DNS
    # The child's address-space limit (MiB) and the decoded bytes all sources may fetch
    # together; None: no limit (in-process callers and tests).
    memory_mb: int | None = None
    max_run_bytes: int | None = None
    # The run's clock (epoch seconds) for expiry; None: the time the run starts. Tests pin it.
    now: float | None = None


@dataclass(repr=False)
class EngineResult:
    feeds: dict[str, list[FeedEntry]]
    report: dict[str, Any]
    errors: list[str]
    ok: bool
    warnings: list[str] = field(default_factory=list)
    explain: ExplainRecord | None = None  # every dropped entry and why (`edl-api explain`)
    # Source name -> {"key", "data"} for the next run (`engine.stateful`): the new state of
    # each stateful source that worked, the previous one of each that failed.
    state: dict[str, SourceState] = field(default_factory=dict)

    def __repr__(self) -> str:
        # The default repr would format every entry; asyncio and loggers call repr freely.
        counts = {name: len(entries) for name, entries in self.feeds.items()}
        return f"EngineResult(ok={self.ok}, feeds={counts}, errors={self.errors!r})"


@dataclass
class _Fetch:
    data: bytes | None = None
    error: str | None = None
    seconds: float = 0.0
    status: int | None = None
    content_type: str | None = None
    collected: Collected | None = None  # a collector source's result (no `data`)
    requests: int = 0
    size: int = 0  # a collector's bytes over all its requests


class _NotAList(Exception):
    """The fetched body is not this source's list at all; the message is the reason."""


def _too_few_valid(source: SourceConfig, parsed: ParseStats, ingested: IngestStats) -> str | None:
    """Why the body is mostly not indicators (below `min_valid_percent`), or None."""
    floor = source.valid_floor(parsed.lines)
    bad = ingested.invalid.total()
    valid = ingested.tokens - bad
    not_for_us = sum(parsed.invalid[reason] for reason in NOT_FOR_US)
    records = valid + bad + parsed.invalid.total() - not_for_us
    if not floor or not records or valid * 100 >= floor * records:
        return None
    share = valid * 100 // records
    return (
        f"only {share}% of {records} records are valid indicators "
        f"(min_valid_percent is {floor})"
    )


def _withdraw(store: IndicatorStore, bit: int) -> None:
    """Take one source's indicators back out of the store (its bit, and what only it had)."""
    keep = ~bit
    for mapping in store.maps().values():
        for key in [key for key, mask in mapping.items() if mask & bit]:
            mask = mapping[key] & keep
            if mask:
                mapping[key] = mask
            else:
                del mapping[key]


def _redact(text: str, secrets: set[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    # Logs and records are single-line and printable.
    return "".join(ch if ch.isprintable() else " " for ch in text)[:500]


async def _fetch_all(
    config: PipelineConfig, settings: EngineSettings, deadline: float, secrets: set[str],
    notify: Progress, byte_budget: ByteBudget, now: float,
    state: Mapping[str, SourceState] | None,
) -> list[_Fetch]:
    policy = SsrfPolicy.build(settings.ssrf_allow_cidrs, settings.ssrf_allow_hosts)
    semaphore = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(source: SourceConfig, client: Any) -> _Fetch:
        result = await fetch_one(source, client)
        # Fetches run concurrently: report each as it lands, so progress moves.
        notify(ProgressEvent("fetched", {
            "name": source.name, "ok": result.error is None,
            "bytes": len(result.data or b"") or result.size, "seconds": round(result.seconds, 3),
        }))
        return result

    async def fetch_one(source: SourceConfig, client: Any) -> _Fetch:
        if source.values is not None:
            return _Fetch()
        async with semaphore:
            started = time.monotonic()
            budget = min(source.timeout_seconds, deadline - started)
            result = _Fetch()
            try:
                if budget <= 0:
                    raise TimeoutError
                async with asyncio.timeout(budget):
                    conversation = collect.collector(source.format)
                    if conversation is not None:
                        # A conversation (TAXII pages, MISP events): the same guard, caps
                        # and deadline as one fetch, over every request.
                        fetcher = SourceFetcher(
                            client, source, policy, settings.resolver, settings.secrets,
                            secrets, byte_budget,
                        )
                        try:
                            previous = previous_of(source, state).collector
                            result.collected = await conversation(source, fetcher, previous, now)
                        finally:
                            result.requests, result.size = fetcher.requests, fetcher.bytes
                        fetched: Fetched | None = None
                    elif source.url is not None:
                        fetched = await fetch_url(
                            client, source, policy, settings.resolver, settings.secrets,
                            secrets, byte_budget,
                        )
                    else:
                        fetched = await asyncio.to_thread(
                            read_path, source, settings.source_dir, byte_budget
                        )
                if fetched is not None:
                    result.data, result.status = fetched.data, fetched.status
                    result.content_type = fetched.content_type
            except (SourceError, BudgetExceeded) as exc:
                result.error = str(exc)
            except TimeoutError:
                result.error = f"timed out after {round(budget, 1):g}s"
            except MemoryError:
                raise  # the run's memory limit: the whole run fails (engine.__main__)
            except Exception as exc:  # noqa: BLE001 - one broken source must not kill the run
                result.error = f"unexpected {exc.__class__.__name__}"
            result.seconds = time.monotonic() - started
            if result.error is not None:
                result.error = _redact(result.error, secrets)
            return result

    needs_client = any(s.url is not None for s in config.sources)
    if not needs_client:
        return list(await asyncio.gather(*(one(s, None) for s in config.sources)))
    async with make_client() as client:
        return list(await asyncio.gather(*(one(s, client) for s in config.sources)))


async def run_pipeline(
    config: PipelineConfig, settings: EngineSettings, progress: Progress | None = None,
    state: Mapping[str, SourceState] | None = None,
) -> EngineResult:
    """Run the whole engine once. `ok` is False when a non-optional source failed.

    `state` is what the previous run's `EngineResult.state` held (source name -> {key,
    data}); each source uses only its own, and only while its identity is unchanged."""
    started = time.monotonic()
    now = settings.now if settings.now is not None else time.time()
    deadline = started + settings.total_deadline_seconds
    notify: Progress = progress or (lambda _event: None)
    secrets: set[str] = set()
    errors: list[str] = []
    warnings: list[str] = []
    stages: dict[str, float] = {}

    notify(ProgressEvent("stage", {"stage": "fetch", "sources": len(config.sources)}))
    byte_budget = ByteBudget(settings.max_run_bytes)
    fetches = await _fetch_all(
        config, settings, deadline, secrets, notify, byte_budget, now, state
    )
    stages["fetch"] = time.monotonic() - started
    if (over_budget := byte_budget.error()) is not None:
        errors.append(over_budget)  # optional sources too: the run as a whole was too big
        for fetched in fetches:  # the run fails anyway: do not parse what did arrive
            if fetched.error is None and (
                fetched.data is not None or fetched.collected is not None
            ):
                fetched.data, fetched.collected = None, None
                fetched.error = "not parsed: the run byte budget was spent"

    # Millions of long-lived small objects make each generational GC pass rescan them
    # all; nothing below creates reference cycles, so pause the collector meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _process(
            config, settings, fetches, secrets, errors, warnings, stages, started, deadline, notify,
            now, state or {},
        )
    finally:
        if gc_was_enabled:
            gc.enable()


def _process(
    config: PipelineConfig,
    settings: EngineSettings,
    fetches: list[_Fetch],
    secrets: set[str],
    errors: list[str],
    warnings: list[str],
    stages: dict[str, float],
    started: float,
    deadline: float,
    notify: Progress,
    now: float,
    state: Mapping[str, SourceState],
) -> EngineResult:
    mark = time.monotonic()
    new_states: dict[str, SourceState] = {}
    extra_tags = ExtraTags()
    block = IndicatorStore()
    allow_store = IndicatorStore()
    recorder = DropRecorder()
    bodies: dict[int, bytes] = {}  # text bodies, kept to find a dropped entry's raw line
    source_reports: list[dict[str, Any]] = []
    for index, (source, fetched) in enumerate(zip(config.sources, fetches, strict=True)):
        report: dict[str, Any] = {
            "name": source.name,
            "role": source.role,
            "optional": source.optional,
            "status": "ok",
            "bytes": 0,
            "lines": 0,
            "tokens": 0,
            "indicators": {},
            "invalid": {},
            "filtered": 0,
            "expired": 0,
            "seconds": round(fetched.seconds, 3),
            "error": fetched.error,
        }
        source_reports.append(report)
        aging = Aging(now, source.max_age_days, previous_of(source, state).first_seen or {})
        if fetched.error is None:
            t0 = time.monotonic()
            parse_stats = ParseStats()
            ingest_stats = IngestStats()
            store = allow_store if source.role == "allow" else block
            types = frozenset(source.types) if source.types is not None else None
            tokens: Iterable[str]
            observations: list[Observation] | None = None
            try:
                if source.values is not None:
                    tokens = inline_values(source.values, parse_stats)
                elif fetched.collected is not None:
                    report.update(bytes=fetched.size, requests=fetched.requests)
                    observations = merge_collected(fetched.collected, parse_stats)
                    tokens = ()
                else:
                    assert fetched.data is not None
                    report["bytes"] = len(fetched.data)
                    if is_html(fetched.data, fetched.content_type):
                        raise _NotAList("returned HTML, not a list")
                    observations = parse_observations(source, fetched.data, parse_stats, now)
                    if observations is None and bulk.takes(source):
                        # Dotted quads and short CIDRs as arrays; the rest line by line.
                        bulk.ingest_text(fetched.data, store, 1 << index, types, parse_stats,
                                         ingest_stats, recorder)
                        tokens = ()
                    elif observations is None:
                        tokens = parse(source, fetched.data, parse_stats)
                if observations is not None:
                    observations = aging.admit(observations)
                    if source.role == "block":
                        extra_tags.add(observations)
                    tokens = values_of(observations)
                elif source.max_age_days is not None:
                    tokens = aging.admit_tokens(tokens)
                ingest(tokens, store, 1 << index, types, ingest_stats, recorder)
                for value, why in aging.expired:
                    recorder.add_expired(value, why, 1 << index)
                if source.values is None:
                    fetched.error = parse_stats.failure or _too_few_valid(
                        source, parse_stats, ingest_stats
                    )
            except _NotAList as exc:
                fetched.error = str(exc)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - parsers must not raise; be safe anyway
                fetched.error = f"parse failed: {exc.__class__.__name__}"
            if source.format == "text" and fetched.data is not None:
                bodies[index] = fetched.data
            fetched.data = None  # free the body early
            if fetched.error is not None:
                if source.optional:
                    # A broken optional source contributes nothing, as if its fetch had failed.
                    _withdraw(store, 1 << index)
            elif types is not None and ingest_stats.filtered and not ingest_stats.indicators:
                warnings.append(
                    f"source {source.name}: types [{', '.join(source.types or ())}] kept "
                    f"nothing ({ingest_stats.filtered} indicators of other types)"
                )
            invalid = parse_stats.invalid + ingest_stats.invalid
            if observations is not None and (source.date_column or source.date_query):
                report["undated"] = aging.undated  # judged by first_seen instead
            report.update(
                expired=len(aging.expired),
                lines=parse_stats.lines,
                tokens=ingest_stats.tokens,
                indicators=dict(sorted(ingest_stats.indicators.items())),
                invalid=dict(sorted(invalid.items())),
                filtered=ingest_stats.filtered,
                seconds=round(fetched.seconds + time.monotonic() - t0, 3),
                error=fetched.error,
            )
        if is_stateful(source):
            if fetched.error is None:
                collected = fetched.collected.state if fetched.collected is not None else None
                remembered = new_state(source, collected, aging.first_seen)
            else:  # a failure loses nothing: the next run starts from the last good state
                remembered = state.get(source.name)
            if remembered is not None:
                new_states[source.name] = remembered
            fetched.collected = None
        if fetched.error is not None:
            report["status"] = "failed"
            message = f"source {source.name}: {fetched.error}"
            (warnings if source.optional else errors).append(message)
        notify(ProgressEvent("source", dict(report)))
    stages["parse"] = time.monotonic() - mark

    unique_before = block.counts()
    mark = time.monotonic()
    added = augment(block, config.augment)
    provenance = Provenance(config)
    allowlist = Allowlist.build(config.rules.allow, [allow_store])
    rules = Rules(config.rules, allowlist, provenance.confidence, recorder)
    notify(ProgressEvent("stage", {"stage": "rules"}))
    rules.apply(block)
    stages["rules"] = time.monotonic() - mark

    # Everything dropped so far gets its raw line now: unless a feed is capped (a cut
    # needs locating too), the bodies go before the feeds are built, the memory peak.
    mark = time.monotonic()
    record = start_record(
        recorder, config, allow_store, block.url_hosts, provenance.confidence,
        {i: r["lines"] for i, r in enumerate(source_reports)}, bodies,
    )
    if not config.pipeline.max_entries:
        bodies.clear()
    explain_seconds = time.monotonic() - mark

    mark = time.monotonic()
    notify(ProgressEvent("stage", {"stage": "aggregate"}))
    aggregate = config.pipeline.aggregate
    min_prefix = config.rules.min_prefix
    family4 = aggregate_ipv4(block, min_prefix.ipv4, aggregate)
    family6 = aggregate_family(
        block.sorted_hosts.get(6, []), block.ipv6, block.networks6, 128, min_prefix.ipv6, aggregate
    )
    stages["aggregate"] = time.monotonic() - mark
    # The families hold all the feeds need: free the host maps (a million ints at 1M)
    # before the entries are built, which is where the run's memory peaks.
    block.hosts4.clear()
    for mapping in (block.ipv6, block.sorted_hosts):
        mapping.clear()
    block.networks4, block.networks6 = [], []

    mark = time.monotonic()
    builders: dict[str, Callable[[], list[FeedEntry]]] = {
        "ipv4": lambda: host_entries(family4, 4, provenance),
        "ipv6": lambda: host_entries(family6, 6, provenance),
        "cidr": lambda: join_entries(
            prefix_entries(family4.networks, 4, provenance),
            prefix_entries(family6.networks, 6, provenance),
        ),
        "ip": lambda: join_entries(
            # hosts shared with the ipv4 feed, when it is built (first) too
            prefix_entries(family4.union, 4, provenance, feeds.get("ipv4")),
            prefix_entries(family6.union, 6, provenance),
        ),
        "fqdn": lambda: name_entries(block.fqdn, "fqdn", provenance),
        "url": lambda: name_entries(block.url, "url", provenance),
    }
    drops = rules.drops
    feeds: dict[str, list[FeedEntry]] = {}
    feed_reports: dict[str, Any] = {}
    for output in config.pipeline.outputs:
        entries = builders[output]()
        extra_tags.apply(entries)
        if output == "ip":
            dropped: Counter[str] = drops["ipv4"] + drops["ipv6"] + drops["cidr"]
        else:
            dropped = Counter(drops[output])
        if output == "ipv4" and family4.covered_hosts:
            dropped["covered_by_network"] += family4.covered_hosts
        if output == "ipv6" and family6.covered_hosts:
            dropped["covered_by_network"] += family6.covered_hosts
        limit = config.pipeline.max_entries.get(output)
        cut = 0
        if limit is not None:
            before = entries
            entries, cut = cap_entries(entries, limit)
            if cut:
                kept = {id(entry) for entry in entries}
                recorder.cut.extend((output, e) for e in before if id(e) not in kept)
        feeds[output] = entries
        feed_reports[output] = {
            "count": len(entries),
            "dropped": dict(sorted(dropped.items())),
            "cut": cut,
        }
        if output == "cidr" and rules.split:
            feed_reports[output]["split"] = dict(sorted(rules.split.items()))
    stages["feeds"] = time.monotonic() - mark

    mark = time.monotonic()
    explain = finish_record(record, recorder, config, bodies)
    bodies.clear()
    stages["explain"] = explain_seconds + time.monotonic() - mark

    if time.monotonic() > deadline:
        errors.append(f"run exceeded the total deadline of {settings.total_deadline_seconds:.0f}s")
    stages["total"] = time.monotonic() - started
    ok = not errors
    if not ok:
        # A failed run publishes nothing: do not hand out partial feeds, nor count them.
        feeds = {output: [] for output in config.pipeline.outputs}
    report = {
        "ok": ok,
        "sources": source_reports,
        "feeds": feed_reports,
        "counts": {
            "tokens": sum(r["tokens"] for r in source_reports),
            "invalid": sum(sum(r["invalid"].values()) for r in source_reports),
            "expired": sum(r["expired"] for r in source_reports),
            "unique": unique_before,
            "augmented": dict(sorted(added.items())),
            "allowlist": {
                "ipv4_ranges": len(allowlist.v4),
                "ipv6_ranges": len(allowlist.v6),
                "names": len(allowlist.names),
                "zones": len(allowlist.zones),
                "urls": len(allowlist.urls),
            },
            "published": {name: len(entries) for name, entries in feeds.items()},
        },
        "seconds": {name: round(value, 3) for name, value in stages.items()},
        "errors": errors,
        "warnings": warnings,
    }
    notify(ProgressEvent("done", {"ok": ok, "published": report["counts"]["published"]}))
    return EngineResult(feeds=feeds, report=report, errors=errors, ok=ok, warnings=warnings,
                        explain=explain, state=new_states)
