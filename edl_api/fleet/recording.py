"""What a feed answer given to a device records in the poll ledger (`fleet.ledger`): the
fast path and the feed routes both call these, so a poll reads the same either way."""

from __future__ import annotations

import re

from starlette.datastructures import QueryParams
from starlette.types import Scope

from edl_api.errors import AppError, database_unavailable
from edl_api.feeds.cache import FeedBody
from edl_api.feeds.http import FeedRequest
from edl_api.fleet.ledger import MD5_SUFFIX, PollLedger


def client_address(scope: Scope) -> str | None:
    """The peer as the ASGI server reports it (the real client behind `--proxy-headers`)."""
    client = scope.get("client")
    return None if not client else str(client[0])


def record_answer(
    ledger: PollLedger, scope: Scope, device_id: int, feed: FeedRequest, body: FeedBody,
    status: int, nbytes: int, *, md5: bool = False,
) -> None:
    """A feed answer (200/304) given to a device."""
    ledger.record(
        device_id, feed.pipeline_id, feed.kind, feed.fmt + MD5_SUFFIX if md5 else feed.fmt,
        status, body.etag, body.run_ids, nbytes, body.count, body.truncated,
        client_address(scope),
    )


_FEED_PATH = re.compile(r"^/(?:pipelines/([^/]*)/)?edl/([^/]*)$")


def record_failure(
    ledger: PollLedger, scope: Scope, device_id: int, feed: FeedRequest | None,
    exc: BaseException, *, md5: bool = False,
) -> None:
    """An error answer the feed route gives a device: its status, the feed as far as the
    URL names one (a URL that names no feed type leaves no feed state, only the poll)."""
    if isinstance(exc, AppError):
        status = exc.status_code
    else:
        status = 503 if database_unavailable(exc) is not None else 500
    if feed is not None:
        pipeline_id, kind, fmt = feed.pipeline_id, feed.kind, feed.fmt
    else:
        path = str(scope.get("path", "")).removesuffix(MD5_SUFFIX)
        match = _FEED_PATH.match(path)
        raw_id, kind = match.groups() if match else (None, "?")
        pipeline_id = int(raw_id) if raw_id and raw_id.isdigit() and len(raw_id) <= 10 else 0
        if raw_id is not None and not pipeline_id:
            kind = "?"  # not a pipeline id: never confused with the global feed (0)
        fmt = QueryParams(scope.get("query_string", b"")).get("format", "plain")
    ledger.record(
        device_id, pipeline_id, kind, fmt + MD5_SUFFIX if md5 else fmt, status, None, "", 0,
        None, 0, client_address(scope),
    )
