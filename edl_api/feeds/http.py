"""The HTTP side of a feed: which feed a URL names, the errors a wrong URL answers, and
which answer (200 identity or gzip, 304, HEAD) a poll gets. Shared by the route and the
fast path, so both say exactly the same."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from edl_api.auth.principal import Principal
from edl_api.engine.entries import FEED_TYPES
from edl_api.errors import AppError, NotFound, ServiceUnavailable, Unprocessable
from edl_api.feeds.cache import FeedBody, FeedPointer
from edl_api.feeds.render import FORMATS, takes_ports_option
from edl_api.schemas import MAX_DB_ID


class UnknownFeedType(NotFound):
    code = "unknown_feed_type"


class UnknownFormat(Unprocessable):
    code = "unknown_format"


class FeedBytesGone(ServiceUnavailable):
    code = "feed_changed"
    headers = {"Retry-After": "2"}  # noqa: RUF012 - read-only


# A firewall that gets an error keeps its last list, logs the failed fetch and retries;
# an empty 200 would instead look like a list with nothing to block.
NOT_READY_RETRY_SECONDS = 60


class FeedNotReady(ServiceUnavailable):
    code = "feed_not_ready"
    headers = {"Retry-After": str(NOT_READY_RETRY_SECONDS)}  # noqa: RUF012 - read-only


class FeedTypeNotPublished(NotFound):
    code = "feed_type_not_published"


def require_served(
    principal: Principal, pointer: FeedPointer | None, pipeline_id: int, kind: str
) -> FeedPointer:
    """The pointer of a feed this caller may be served, with an artifact; else what the
    route answers: 404 (missing, not live, or out of scope: all alike) or `not_served`."""
    if (
        pointer is None or not pointer.live
        or not principal.sees_pipeline(pointer.profile_id, pipeline_id)
    ):
        raise NotFound("not found")
    if pointer.sha256 is None:
        raise not_served(pointer, kind)
    return pointer


def not_served(pointer: FeedPointer, kind: str) -> AppError:
    """Why a live pipeline serves nothing of `kind`: not one of its outputs (404), or not
    published yet (503: its first run is pending, failed, or was held by the guard)."""
    if pointer.outputs is not None and kind not in pointer.outputs:
        return FeedTypeNotPublished(
            f"pipeline {pointer.pipeline_id} does not publish a {kind} feed; its outputs: "
            f"{', '.join(pointer.outputs)}"
        )
    return FeedNotReady(
        f"pipeline {pointer.pipeline_id} has not published its {kind} feed yet; "
        f"retry after {NOT_READY_RETRY_SECONDS} s"
    )


class NotADeviceFeed(NotFound):
    """A device with declared feeds asked for another one (or the global feed). The answer
    is the same whether that pipeline exists or not: it names only what the caller sent."""

    code = "not_a_device_feed"


def not_a_device_feed(
    name: str, profile_id: int, device_id: int, kind: str, pipeline_id: int | None
) -> NotADeviceFeed:
    change = f"PATCH /profiles/{profile_id}/devices/{device_id}"
    if pipeline_id is None:
        return NotADeviceFeed(
            f"device {name} reads only its declared feeds, not the global feed /edl/{kind}; "
            f"poll /pipelines/{{pipeline_id}}/edl/{kind} of a pipeline in its feeds ({change} "
            "changes them)"
        )
    return NotADeviceFeed(
        f"device {name} does not read pipeline {pipeline_id}'s {kind} feed; add it to the "
        f"device's feeds ({change})"
    )


def check_type_and_format(indicator_type: str, fmt: str) -> None:
    if indicator_type not in FEED_TYPES:
        raise UnknownFeedType(
            f"no such feed type; one of {', '.join(FEED_TYPES)}"
        )
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown format; one of {', '.join(FORMATS)}")


class FeedRequest(NamedTuple):
    """Which feed a URL asks for (the route and the fast path both read it here; a tuple,
    as it is made on every poll)."""

    kind: str
    fmt: str
    pipeline_id: int | None  # None: the caller's global feed
    profile_id: int | None  # global feed only: one of the caller's profiles
    # `?ports=strip`, kept only for a format whose grammar refuses ports (so the others
    # share one cached body whatever the query says).
    strip_ports: bool = False


_PIPELINE_FEED = re.compile(r"^/pipelines/([^/]+)/edl/([^/]+)$")
_GLOBAL_FEED = re.compile(r"^/edl/([^/]+)$")


def db_id(raw: str) -> int | None:
    """An id the database can hold (`schemas.MAX_DB_ID`), or None."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        return None
    number = int(raw)
    return number if 1 <= number <= MAX_DB_ID else None


def feed_path_parts(path: str) -> tuple[str | None, str] | None:
    """(the raw pipeline id, None for the global feed; the raw type) a feed URL path names,
    unchecked; None when it is no feed path (what a failed poll is recorded under)."""
    match = _PIPELINE_FEED.match(path)
    if match is not None:
        return match.group(1), match.group(2)
    match = _GLOBAL_FEED.match(path)
    return None if match is None else (None, match.group(1))


PORTS_CHOICES = ("drop", "strip")


def _strip_ports(query: Mapping[str, str], fmt: str) -> bool:
    ports = query.get("ports", "drop")
    if ports not in PORTS_CHOICES:
        raise Unprocessable(
            [{"loc": ["query", "ports"], "msg": "must be drop or strip", "type": "enum"}],
            code="validation_error",
        )
    return ports == "strip" and takes_ports_option(fmt)


def parse_feed_request(path: str, query: Mapping[str, str]) -> FeedRequest:
    """The feed `path` + `query` ask for. Raises what the route answers otherwise: 404 for
    no such feed path or type (an id that is no number names no pipeline), 422 for an
    unknown format, `ports` value or a profile_id that is no number. Other parameters are
    ignored."""
    fmt = query.get("format", "plain")
    match = _PIPELINE_FEED.match(path)
    if match is not None:
        raw_id, kind = match.groups()
        if kind not in FEED_TYPES or fmt not in FORMATS:
            check_type_and_format(kind, fmt)  # raises the route's error
        pipeline_id = db_id(raw_id)
        if pipeline_id is None:
            raise NotFound("not found")
        return FeedRequest(kind, fmt, pipeline_id, None, _strip_ports(query, fmt))
    match = _GLOBAL_FEED.match(path)
    if match is None:
        raise NotFound("not found")
    kind = match.group(1)
    check_type_and_format(kind, fmt)
    strip_ports = _strip_ports(query, fmt)
    raw_profile = query.get("profile_id")
    if raw_profile is None:
        return FeedRequest(kind, fmt, None, None, strip_ports)
    profile_id = db_id(raw_profile)
    if profile_id is None:
        raise Unprocessable(
            [{"loc": ["query", "profile_id"], "msg": f"must be an integer from 1 to {MAX_DB_ID}",
              "type": "int_parsing"}],
            code="validation_error",
        )
    return FeedRequest(kind, fmt, None, profile_id, strip_ports)


# --- pointers -------------------------------------------------------------------------


_GZIP_ANSWERS: dict[str, bool] = {}


def accepts_gzip(value: str | None) -> bool:
    """Whether Accept-Encoding allows gzip; a fleet sends a handful of distinct values, so
    the answers are remembered (bounded) instead of parsed on every poll."""
    if not value:
        return False
    known = _GZIP_ANSWERS.get(value)
    if known is None:
        known = _accepts_gzip(value)
        if len(_GZIP_ANSWERS) < 256:
            _GZIP_ANSWERS[value] = known
    return known


def _accepts_gzip(value: str) -> bool:
    for part in value.split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key.lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def _etag_matches(header: str, etag: str) -> bool:
    for token in header.split(","):
        token = token.strip()
        if token == "*":
            return True
        token = token.removeprefix("W/").strip('"')
        if token == etag:
            return True
    return False


def _not_modified_since(header: str, last_modified: datetime | None) -> bool:
    if last_modified is None:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        return False
    return last_modified.replace(microsecond=0) <= since


def choose(
    body: FeedBody, headers: Mapping[str, str], head: bool
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, payload) for this request: 304, gzip or identity; HEAD: no payload."""
    match = headers.get("if-none-match")
    if match is not None:
        if match == body.quoted_etag or _etag_matches(match, body.etag):
            return 304, body.not_modified_headers, b""
    else:
        since = headers.get("if-modified-since")
        if since is not None and _not_modified_since(since, body.last_modified):
            return 304, body.not_modified_headers, b""
    if accepts_gzip(headers.get("accept-encoding")):
        return 200, body.gzip_headers, b"" if head else body.gzip
    return 200, body.identity_headers, b"" if head else body.plain
