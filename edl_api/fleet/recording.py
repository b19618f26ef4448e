"""What a feed answer given to a device records in the poll ledger (`fleet.ledger`): the
fast path and the feed routes both call these, so a poll reads the same either way."""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.types import Scope

from edl_api.errors import AppError, database_unavailable
from edl_api.feeds.cache import FeedBody
from edl_api.feeds.http import FeedRequest, db_id, feed_path_parts
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
        parts = feed_path_parts(str(scope.get("path", "")).removesuffix(MD5_SUFFIX))
        raw_id, kind = parts if parts is not None else (None, "?")
        pipeline_id = 0 if raw_id is None else (db_id(raw_id) or 0)
        if raw_id is not None and not pipeline_id:
            kind = "?"  # not a pipeline id: never confused with the global feed (0)
        fmt = QueryParams(scope.get("query_string", b"")).get("format", "plain")
    ledger.record(
        device_id, pipeline_id, kind, fmt + MD5_SUFFIX if md5 else fmt, status, None, "", 0,
        None, 0, client_address(scope),
    )
