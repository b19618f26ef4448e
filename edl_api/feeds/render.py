"""Vendor renderers for published feeds (pure functions; CONFIG.md "Output formats").

Entries arrive normalised and sorted from the engine. A renderer only drops lines
the target device would refuse to load, and reports how many it dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from edl_api.engine.entries import FeedEntry
from edl_api.engine.indicators import cidr_ok, int_to_ip

PANOS_MAX_CHARS = 255  # PAN-OS URL and domain EDL entries
FORTINET_MAX_CHARS = 255  # FortiGate threat feed domain entries
FORTINET_URL_MAX_CHARS = 2048
CHECKPOINT_HEADER = "#UNIQ-NAME,VALUE,TYPE,CONFIDENCE,SEVERITY,PRODUCT,COMMENT"
_URL_TOKEN_SPLIT = re.compile(r"[./?&=;+:@,_~-]")


@dataclass(frozen=True)
class RenderedFeed:
    body: bytes
    count: int  # lines rendered
    dropped: int  # entries the format cannot express


def _lines(lines: list[str], dropped: int) -> RenderedFeed:
    body = ("\n".join(lines) + "\n").encode() if lines else b""
    return RenderedFeed(body, len(lines), dropped)


def _plain(entries: Sequence[FeedEntry], _type: str) -> RenderedFeed:
    return _lines([e.value for e in entries], 0)


def _url_parts(value: str) -> tuple[str, str | None, str]:
    """(host, port or None, rest) of a normalised URL value."""
    cut = len(value)
    for ch in "/?":
        pos = value.find(ch)
        if pos != -1 and pos < cut:
            cut = pos
    authority, rest = value[:cut], value[cut:]
    if authority.startswith("["):
        close = authority.find("]")
        host, after = authority[: close + 1], authority[close + 1 :]
        return host, after[1:] if after.startswith(":") else None, rest
    host, colon, port = authority.partition(":")
    return host, port if colon else None, rest


def _panos_url_ok(value: str) -> bool:
    if len(value) > PANOS_MAX_CHARS:
        return False
    _, port, _ = _url_parts(value)
    if port is not None:
        return False  # PAN-OS URL lists carry no port
    # "*" is allowed only as a whole token between separators.
    return all(tok == "*" or "*" not in tok for tok in _URL_TOKEN_SPLIT.split(value))


def _panos(entries: Sequence[FeedEntry], feed_type: str) -> RenderedFeed:
    if feed_type == "url":
        lines = [e.value for e in entries if _panos_url_ok(e.value)]
    elif feed_type == "fqdn":
        lines = [e.value for e in entries if len(e.value) <= PANOS_MAX_CHARS]
    else:
        lines = [e.value for e in entries]
    return _lines(lines, len(entries) - len(lines))


def _fortinet(entries: Sequence[FeedEntry], feed_type: str) -> RenderedFeed:
    if feed_type == "url":
        lines = [e.value for e in entries if len(e.value) <= FORTINET_URL_MAX_CHARS]
    elif feed_type == "fqdn":
        lines = [e.value for e in entries if len(e.value) <= FORTINET_MAX_CHARS]
    else:
        lines = [e.value for e in entries]
    return _lines(lines, len(entries) - len(lines))


def _level(confidence: int) -> str:
    return "high" if confidence >= 67 else "medium" if confidence >= 34 else "low"


def _checkpoint_value(entry: FeedEntry) -> tuple[str, str] | None:
    """(VALUE, TYPE) in Check Point's vocabulary, or None if it cannot be expressed."""
    kind = entry.indicator_type
    if kind in ("ipv4", "ipv6"):
        return entry.value, "IP"
    if kind == "cidr":
        parsed = cidr_ok(entry.value)
        if parsed is None:
            return None
        version, first, last = parsed
        return f"{int_to_ip(first, version)}-{int_to_ip(last, version)}", "IP Range"
    if kind == "fqdn":
        return None if entry.value.startswith("*.") else (entry.value, "Domain")
    if kind == "url":
        if "," in entry.value or '"' in entry.value:
            return None  # the Check Point CSV reader has no quoting
        return entry.value, "URL"
    return None


def _checkpoint(entries: Sequence[FeedEntry], _type: str) -> RenderedFeed:
    lines = [CHECKPOINT_HEADER]
    dropped = 0
    for entry in entries:
        converted = _checkpoint_value(entry)
        if converted is None:
            dropped += 1
            continue
        value, kind = converted
        name = "edl-" + hashlib.sha1(f"{kind}:{value}".encode()).hexdigest()[:16]
        level = _level(entry.confidence)
        comment = " ".join([*entry.sources, *(f"#{t}" for t in entry.tags)]).replace(",", " ")
        lines.append(f"{name},{value},{kind},{level},{level},AB,{comment}")
    return RenderedFeed(("\n".join(lines) + "\n").encode(), len(lines) - 1, dropped)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _csv(entries: Sequence[FeedEntry], _type: str) -> RenderedFeed:
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


def _json(entries: Sequence[FeedEntry], _type: str) -> RenderedFeed:
    body = json.dumps([entry_dict(e) for e in entries], separators=(",", ":"))
    return RenderedFeed((body + "\n").encode(), len(entries), 0)


Renderer = Callable[[Sequence[FeedEntry], str], RenderedFeed]


@dataclass(frozen=True)
class FeedFormat:
    name: str
    content_type: str
    render: Renderer
    # Whether the body shows sources, tags, confidence or seen times. Only then does
    # serving load the feed's indicator rows; the others get bare entries (value, type).
    needs_provenance: bool


_TEXT = "text/plain; charset=utf-8"
_CSV = "text/csv; charset=utf-8"
FEED_FORMATS: dict[str, FeedFormat] = {
    f.name: f
    for f in (
        FeedFormat("plain", _TEXT, _plain, needs_provenance=False),
        FeedFormat("panos", _TEXT, _panos, needs_provenance=False),
        FeedFormat("fortinet", _TEXT, _fortinet, needs_provenance=False),
        FeedFormat("checkpoint", _CSV, _checkpoint, needs_provenance=True),
        FeedFormat("csv", _CSV, _csv, needs_provenance=True),
        FeedFormat("json", "application/json", _json, needs_provenance=True),
    )
}
FORMATS: tuple[str, ...] = tuple(FEED_FORMATS)


def render(entries: Sequence[FeedEntry], indicator_type: str, fmt: str) -> RenderedFeed:
    """Render one feed (`indicator_type` is the feed: ipv4 ipv6 cidr fqdn url ip)."""
    try:
        feed_format = FEED_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    return feed_format.render(entries, indicator_type)
