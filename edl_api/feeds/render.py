"""Vendor renderers for published feeds (pure functions; CONFIG.md "Output formats").

Entries arrive normalised and sorted from the engine. A renderer only drops lines the
target device would refuse to load (the vendor grammars in `grammars.py`, each rule cited),
and reports how many it dropped, why, and a sample.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edl_api.engine.build import entry_values
from edl_api.engine.entries import FeedEntry
from edl_api.engine.indicators import cidr_ok, has_control, int_to_ip, ip_kind
from edl_api.feeds import grammars, stix
from edl_api.feeds.grammars import CHECKPOINT, CISCO, FORTINET, GRAMMARS, PANOS, VendorGrammar

CHECKPOINT_HEADER = "#UNIQ-NAME,VALUE,TYPE,CONFIDENCE,SEVERITY,PRODUCT,COMMENT"
DROP_SAMPLE = 10  # dropped entries shown (with their reason) per feed and format
CONTROL_CHARACTER = "control_character"  # the drop reason of the last check (see below)

logger = logging.getLogger("edl_api.feeds")


@dataclass(frozen=True)
class RenderOptions:
    """Per-request choices. `strip_ports`: a ported URL, which PAN-OS and Cisco cannot load,
    is published as host/path (blocking it on every port) instead of being dropped."""

    strip_ports: bool = False
    # When the served artifact was published: the STIX time of an entry without provenance.
    published_at: datetime | None = None


DEFAULT_OPTIONS = RenderOptions()


@dataclass
class Drops:
    """How many entries a renderer left out, by reason, and the first few of them."""

    by_reason: Counter[str] = field(default_factory=Counter)
    sample: list[tuple[str, str]] = field(default_factory=list)  # (value, reason)

    def add(self, value: str, reason: str) -> None:
        self.by_reason[reason] += 1
        if len(self.sample) < DROP_SAMPLE:
            if reason == CONTROL_CHARACTER:  # shown escaped, never as the raw character
                value = value.encode("ascii", "backslashreplace").decode("ascii")
            self.sample.append((value, reason))

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def summary(self) -> dict[str, Any]:
        return {
            "dropped": self.total,
            "reasons": dict(sorted(self.by_reason.items())),
            "sample": [{"value": v, "reason": r} for v, r in self.sample],
        }


@dataclass(frozen=True)
class RenderedFeed:
    body: bytes
    count: int  # lines rendered
    dropped: int  # entries the format cannot express
    drops: Drops = field(default_factory=Drops)


Renderer = Callable[[Sequence[FeedEntry], str, "RenderOptions"], RenderedFeed]


def _lines(lines: list[str], drops: Drops) -> RenderedFeed:
    body = ("\n".join(lines) + "\n").encode() if lines else b""
    return RenderedFeed(body, len(lines), drops.total, drops)


def _plain(entries: Sequence[FeedEntry], _type: str, _options: RenderOptions) -> RenderedFeed:
    return _lines(entry_values(entries), Drops())


def vendor_value(
    grammar: VendorGrammar, entry: FeedEntry, options: RenderOptions
) -> tuple[str | None, str | None]:
    """(the line value, None) or (None, drop reason) of one entry under `grammar`."""
    value = entry.value
    reason = grammars.check(grammar, entry.indicator_type, value)
    if reason == "port" and options.strip_ports:
        value = grammars.strip_port(value)
        reason = grammars.check(grammar, entry.indicator_type, value)
    return (value, None) if reason is None else (None, reason)


def _vendor_lines(fmt: str) -> Renderer:
    """A plain one-entry-per-line list, checked against the vendor's grammar."""
    grammar = GRAMMARS[fmt]

    def render_list(
        entries: Sequence[FeedEntry], _type: str, options: RenderOptions
    ) -> RenderedFeed:
        lines: list[str] = []
        drops = Drops()
        stripped = False
        for entry in entries:
            if entry.indicator_type in grammar.types and grammars.plainly_ok(entry.value):
                lines.append(entry.value)  # nearly every line: no rule can apply
                continue
            value, reason = vendor_value(grammar, entry, options)
            if value is None:
                drops.add(entry.value, reason or "")
            else:
                stripped = stripped or value != entry.value
                lines.append(value)
        if stripped:  # a URL without its port may meet its portless twin
            lines = list(dict.fromkeys(lines))
        return _lines(lines, drops)

    return render_list


def _level(confidence: int) -> str:
    return "high" if confidence >= 67 else "medium" if confidence >= 34 else "low"


def _csv_field(value: str) -> str:
    # sk132193: "Quoted fields are accepted"; only a value with a comma or quote needs it.
    if "," in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def _checkpoint_value(entry: FeedEntry) -> tuple[str, str]:
    """(VALUE, TYPE) in Check Point's vocabulary (the grammar already admitted the entry)."""
    kind = entry.indicator_type
    if kind == "cidr":
        parsed = cidr_ok(entry.value)
        assert parsed is not None  # the engine publishes valid networks only
        version, first, last = parsed
        return f"{int_to_ip(first, version)}-{int_to_ip(last, version)}", "IP Range"
    return entry.value, {"ipv4": "IP", "fqdn": "Domain", "url": "URL"}[kind]


def _checkpoint(entries: Sequence[FeedEntry], _type: str, options: RenderOptions) -> RenderedFeed:
    lines = [CHECKPOINT_HEADER]
    drops = Drops()
    for entry in entries:
        reason = grammars.check(CHECKPOINT, entry.indicator_type, entry.value)
        if reason is not None:
            drops.add(entry.value, reason)
            continue
        value, kind = _checkpoint_value(entry)
        name = "edl-" + hashlib.sha1(f"{kind}:{value}".encode()).hexdigest()[:16]
        level = _level(entry.confidence)
        comment = " ".join([*entry.sources, *(f"#{t}" for t in entry.tags)]).replace(",", " ")
        lines.append(f"{name},{_csv_field(value)},{kind},{level},{level},AB,{comment}")
    body = ("\n".join(lines) + "\n").encode()
    return RenderedFeed(body, len(lines) - 1, drops.total, drops)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _csv(entries: Sequence[FeedEntry], _type: str, _options: RenderOptions) -> RenderedFeed:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["value", "type", "sources", "tags", "confidence", "first_seen", "last_seen"])
    for e in entries:
        writer.writerow(
            [
                e.value,
                e.indicator_type,
                "|".join(e.sources),
                "|".join(e.tags),
                e.confidence,
                _iso(e.first_seen) or "",
                _iso(e.last_seen) or "",
            ]
        )
    return RenderedFeed(buffer.getvalue().encode(), len(entries), 0)


def entry_dict(e: FeedEntry) -> dict[str, object]:
    return {
        "value": e.value,
        "type": e.indicator_type,
        "sources": e.sources,
        "tags": e.tags,
        "confidence": e.confidence,
        "first_seen": _iso(e.first_seen),
        "last_seen": _iso(e.last_seen),
    }


def _json(entries: Sequence[FeedEntry], _type: str, _options: RenderOptions) -> RenderedFeed:
    body = json.dumps([entry_dict(e) for e in entries], separators=(",", ":"))
    return RenderedFeed((body + "\n").encode(), len(entries), 0)


def _stix(entries: Sequence[FeedEntry], _type: str, options: RenderOptions) -> RenderedFeed:
    published_at = options.published_at or datetime.now(UTC)
    return RenderedFeed(stix.bundle(entries, published_at), len(entries), 0)


@dataclass(frozen=True)
class FeedFormat:
    name: str
    content_type: str
    render: Renderer
    # Whether the body shows sources, tags, confidence or seen times. Only then does
    # serving load the feed's indicator rows; the others get bare entries (value, type).
    needs_provenance: bool
    # The vendor grammar its lines follow (None: plain, csv, json carry every entry).
    grammar: VendorGrammar | None = None


_TEXT = "text/plain; charset=utf-8"
_CSV = "text/csv; charset=utf-8"
FEED_FORMATS: dict[str, FeedFormat] = {
    f.name: f
    for f in (
        FeedFormat("plain", _TEXT, _plain, needs_provenance=False),
        FeedFormat("panos", _TEXT, _vendor_lines("panos"), needs_provenance=False,
                   grammar=PANOS),
        FeedFormat("fortinet", _TEXT, _vendor_lines("fortinet"), needs_provenance=False,
                   grammar=FORTINET),
        FeedFormat("checkpoint", _CSV, _checkpoint, needs_provenance=True, grammar=CHECKPOINT),
        FeedFormat("csv", _CSV, _csv, needs_provenance=True),
        FeedFormat("json", "application/json", _json, needs_provenance=True),
        FeedFormat("cisco", _TEXT, _vendor_lines("cisco"), needs_provenance=False,
                   grammar=CISCO),
        FeedFormat("stix", stix.STIX_MEDIA_TYPE, _stix, needs_provenance=True),
    )
}
FORMATS: tuple[str, ...] = tuple(FEED_FORMATS)


def render(
    entries: Sequence[FeedEntry], indicator_type: str, fmt: str,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> RenderedFeed:
    """Render one feed (`indicator_type` is the feed: ipv4 ipv6 cidr fqdn url ip)."""
    try:
        feed_format = FEED_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    rendered = feed_format.render(entries, indicator_type, options)
    if _rendered_clean(feed_format, entries, rendered):
        return rendered
    return _without_controls(feed_format, entries, indicator_type, options)


# --- the last check before a body is served ---------------------------------------------
# No published line holds a control, Unicode line break or bidi control (the engine's
# `has_control` set) besides the "\n" that ends it. The engine already refuses such entries
# (`invalid: control_character`); this catches any that got past it (an artifact published
# by an older version, a bug): the entry is left out and counted, never served.

# Bytes a clean line may hold without a closer look: printable ASCII and the line end. No
# ASCII byte occurs inside a multi-byte UTF-8 character, so what is left is whole characters.
_PLAIN_BYTES = bytes([0x0A, *range(0x20, 0x7F)])


class UnsafeFeed(ValueError):
    """A body would carry a control character that no entry explains (not expected)."""


def body_is_clean(body: bytes) -> bool:
    """True when no line of `body` holds a control, line break or bidi character.

    One C pass (~10 ms for 1M lines); only the non-ASCII rest, if any (line ends already
    taken out with the printable ASCII), meets the engine's `has_control`."""
    rest = body.translate(None, _PLAIN_BYTES)
    return not rest or not has_control(rest.decode("utf-8", "replace"))


def _rendered_clean(
    feed_format: FeedFormat, entries: Sequence[FeedEntry], rendered: RenderedFeed
) -> bool:
    if feed_format.name in ("json", "stix"):  # JSON escapes them: check the values it carries
        return body_is_clean("\n".join([e.value for e in entries]).encode("utf-8", "replace"))
    return body_is_clean(rendered.body)


def _without_controls(
    feed_format: FeedFormat, entries: Sequence[FeedEntry], indicator_type: str,
    options: RenderOptions,
) -> RenderedFeed:
    kept: list[FeedEntry] = []
    refused: list[FeedEntry] = []
    for entry in entries:
        (refused if has_control(entry.value) else kept).append(entry)
    logger.warning(
        "%s feed, format %s: %d entries with a control character left out",
        indicator_type, feed_format.name, len(refused),
    )
    rendered = feed_format.render(kept, indicator_type, options)
    if not refused or not _rendered_clean(feed_format, kept, rendered):
        raise UnsafeFeed(f"the {indicator_type} feed holds a control character outside its entries")
    drops = rendered.drops
    for entry in refused:
        drops.add(entry.value, CONTROL_CHARACTER)
    return RenderedFeed(rendered.body, rendered.count, drops.total, drops)


def clean_plain(body: bytes) -> tuple[bytes, int] | None:
    """A plain body (served as stored, not rendered) without its unsafe lines and how many
    were left out, or None when it is clean (nearly always)."""
    if body_is_clean(body):
        return None
    lines = body.decode("utf-8", "replace").split("\n")
    kept = [line for line in lines if not has_control(line)]
    logger.warning("plain feed: %d lines with a control character left out",
                   len(lines) - len(kept))
    return "\n".join(kept).encode("utf-8"), len(lines) - len(kept)


def takes_ports_option(fmt: str) -> bool:
    """Whether `?ports=strip` changes this format's body (its grammar refuses ports)."""
    grammar = FEED_FORMATS[fmt].grammar
    return grammar is not None and not grammar.url_ports


def drop_report(kind: str, lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per vendor format: what its renderer leaves out of this feed's lines (the default
    options: a port is dropped, counted as "port"). Checks only, no bodies built, so it can
    run at publish: one quick pass finds the few lines any rule could apply to."""
    # The combined `ip` feed holds hosts and networks: each line says which it is.
    suspects = grammars.suspect_lines(lines)
    report: dict[str, dict[str, Any]] = {}
    for fmt, feed_format in FEED_FORMATS.items():
        grammar = feed_format.grammar
        if grammar is None:
            continue
        drops = Drops()
        if kind != "ip" and kind not in grammar.types:  # the whole feed is of a foreign type
            for value in lines[:DROP_SAMPLE]:
                drops.add(value, "type_not_supported")
            drops.by_reason["type_not_supported"] = len(lines)
        else:
            for value in suspects:
                line_kind = (ip_kind(value) or kind) if kind == "ip" else kind
                reason = grammars.check(grammar, line_kind, value)
                if reason is not None:
                    drops.add(value, reason)
        if drops.total:
            report[fmt] = drops.summary()
    return report


def drop_reports(feeds: dict[str, Sequence[str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`drop_report` of each feed (type → lines); feeds no format drops from are left out."""
    reports = {kind: drop_report(kind, lines) for kind, lines in feeds.items()}
    return {kind: report for kind, report in reports.items() if report}
