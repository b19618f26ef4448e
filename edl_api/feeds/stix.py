"""STIX 2.1 out: one `indicator` object per feed entry, and the bundle `?format=stix` serves.

Ids are UUIDv5 of the entry (type and value) under one fixed namespace, so a re-publish of
the same values yields the same objects and a TIP that pulls twice sees no churn. The
TAXII server (`edl_api.taxii`) serves the same objects (`indicator_json`).
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from edl_api.engine.entries import FeedEntry

# Fixed for good: changing it changes every id we have ever published.
NAMESPACE = uuid.UUID("6b1d9a64-3f0e-5c2a-9d47-1e8f2c3b5a70")
_NAMESPACE_BYTES = NAMESPACE.bytes
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
# Where the entry came from (our source names): a custom property, named as STIX 2.1
# section 11.1 asks (`x_` + lowercase ASCII letters, digits, underscore).
SOURCES_PROPERTY = "x_edl_sources"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_OBJECT_TYPES = {"ipv4": "ipv4-addr", "ipv6": "ipv6-addr", "fqdn": "domain-name", "url": "url"}


@functools.lru_cache(maxsize=4096)  # a feed's entries share few first_seen times
def stix_timestamp(moment: datetime) -> str:
    """STIX 2.1 timestamp: UTC, `Z`, millisecond precision (a naive time is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, truncated as `stix_timestamp` truncates."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def indicator_id(indicator_type: str, value: str) -> str:
    """`indicator--` + uuid.uuid5(NAMESPACE, "type:value"), computed without the UUID
    object (a third of the time of building a 100k-entry view went there)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{indicator_type}:{value}".encode(),
                                    usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"indicator--{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _literal(text: str) -> str:
    # STIX patterning: a string literal is single-quoted; `\` and `'` are escaped.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stix_pattern(indicator_type: str, value: str) -> str:
    """The STIX pattern matching one entry. A network is an address object's value (CIDR
    is allowed there); a `*.example.com` wildcard matches names ending in `.example.com`."""
    if indicator_type == "cidr":
        object_type = "ipv6-addr" if ":" in value else "ipv4-addr"
    else:
        object_type = _OBJECT_TYPES[indicator_type]
    if indicator_type == "fqdn" and value.startswith("*."):
        return f"[domain-name:value LIKE {_literal('%' + value[1:])}]"
    return f"[{object_type}:value = {_literal(value)}]"


def indicator(entry: FeedEntry, published_at: datetime) -> dict[str, Any]:
    """The indicator object of one entry; first seen (else the publish time) is when it
    was created, last modified and valid from."""
    stamp = stix_timestamp(entry.first_seen or published_at)
    found: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": indicator_id(entry.indicator_type, entry.value),
        "created": stamp,
        "modified": stamp,
        "name": entry.value,
        "indicator_types": ["malicious-activity"],
        "pattern": stix_pattern(entry.indicator_type, entry.value),
        "pattern_type": "stix",
        "valid_from": stamp,
        "confidence": max(0, min(100, int(entry.confidence))),
    }
    if entry.tags:
        found["labels"] = list(entry.tags)
    if entry.sources:
        found[SOURCES_PROPERTY] = list(entry.sources)
    return found


def indicator_json(entry: FeedEntry, published_at: datetime) -> bytes:
    return orjson.dumps(indicator(entry, published_at))


def bundle(entries: Sequence[FeedEntry], published_at: datetime) -> bytes:
    """A STIX 2.1 bundle of the entries' indicators. Its id is UUIDv5 of the objects'
    bytes: the same feed always gives the same bundle, byte for byte."""
    objects = b",".join(indicator_json(entry, published_at) for entry in entries)
    digest = hashlib.sha256(objects).hexdigest()
    head = b'{"type":"bundle","id":"bundle--' + str(uuid.uuid5(NAMESPACE, digest)).encode()
    if not entries:  # `objects`, when present, must hold one or more (STIX 2.1 8.1)
        return head + b'"}\n'
    return head + b'","objects":[' + objects + b"]}\n"
