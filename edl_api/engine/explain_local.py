"""`edl-api explain CONFIG VALUE`: run the engine offline (as `run-local` does) and say,
for each feed, whether VALUE or an entry covering it is listed, and if not, why."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edl_api.engine.__main__ import EXIT_CRASH, EXIT_OK, _load, settings_from_env
from edl_api.engine.config import ConfigError
from edl_api.engine.entries import BASE_TYPES, FeedEntry
from edl_api.engine.explain import lookup
from edl_api.engine.indicators import TRIM, cidr_ok, classify
from edl_api.engine.pipeline import run_pipeline


def covering(entries: list[FeedEntry], value: str) -> list[FeedEntry]:
    """Feed entries equal to `value` or covering it (a network, a `*.` wildcard above it)."""
    items = classify(value.strip(TRIM)).indicators
    out = []
    for item in items:
        bounds = cidr_ok(item.value) if item.indicator_type in ("ipv4", "ipv6", "cidr") else None
        labels = item.value.removeprefix("*.").split(".")
        parents = {"*." + ".".join(labels[i:]) for i in range(1, len(labels))}
        for entry in entries:
            if entry.value == item.value or entry.value in parents:
                out.append(entry)
            elif bounds is not None and entry.indicator_type in ("ipv4", "ipv6", "cidr"):
                other = cidr_ok(entry.value)
                if other and other[0] == bounds[0] and other[1] <= bounds[1] \
                        and other[2] >= bounds[2]:
                    out.append(entry)
    return out


def explain_local(path: str, value: str, as_json: bool = False) -> tuple[int, list[str]]:
    """(exit status, the lines to print): per feed, listed as what, or why not."""
    try:
        config = _load(path)
    except (ConfigError, OSError) as exc:
        return EXIT_CRASH, [f"{path}: not a valid config ({exc.__class__.__name__}); "
                            "see edl-api check-config"]
    result = asyncio.run(run_pipeline(config, settings_from_env()))
    findings = lookup(result.explain, value) if result.explain is not None else []
    query_types = {i.indicator_type for i in classify(value.strip(TRIM)).indicators}
    answer: dict[str, Any] = {"indicator": value.strip(), "run_ok": result.ok,
                              "errors": result.errors, "feeds": {}}
    for feed, entries in result.feeds.items():
        bases = BASE_TYPES[feed]
        listed = covering(entries, value)
        why = [] if listed else [
            f for f in findings if f["feed"] in (None, feed)
            and (f["type"] in bases or f["type"] == "invalid" or f["covers"])
        ]
        if listed or why or query_types & set(bases):
            answer["feeds"][feed] = {"listed": [e.value for e in listed], "why": why}
    if as_json:
        return EXIT_OK, [json.dumps(answer, indent=2)]
    lines = [f"run error: {error}" for error in result.errors]
    for feed, found in answer["feeds"].items():
        if found["listed"]:
            lines.append(f"{feed}: listed as {', '.join(found['listed'])}")
        elif not found["why"]:
            lines.append(f"{feed}: not listed: no source carried it")
        for f in found["why"]:
            where = (f"{f['first_line']['source']} line {f['first_line']['line']}"
                     if f["first_line"] else ", ".join(f["sources"]))
            entry = f" (as {f['value']})" if f["covers"] else ""
            lines.append(f"{feed}: not listed: {f['step']}{entry}: {f['detail']} [from {where}]")
    if not lines:
        lines.append(f"{value.strip()}: no feed of this config can hold it, and no source "
                     "carried it")
    return EXIT_OK, lines
