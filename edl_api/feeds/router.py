"""Feed routes: hosted feeds (also served by the fast path), tokens, views, artifacts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from edl_api import idempotency
from edl_api.auth.deps import Caller, FeedReader, Writer
from edl_api.auth.principal import Principal
from edl_api.db import SessionDep
from edl_api.deps import AppStateDep, FeedCacheDep, SettingsDep
from edl_api.errors import API_ERRORS, ErrorBody, error_responses
from edl_api.feeds import explain as explain_service
from edl_api.feeds import http as feed_http
from edl_api.feeds import service, serving, tokens
from edl_api.feeds.cache import STALE_HEADER, FeedBody, FeedCache
from edl_api.feeds.explain import ExplainResult
from edl_api.feeds.render import FORMATS
from edl_api.feeds.schemas import (
    ActivePipelines,
    FeedTokenCreate,
    FeedTokenCreated,
    FeedTokenPublic,
    SearchResult,
)
from edl_api.fleet.ledger import PollLedger
from edl_api.fleet.recording import record_answer, record_failure
from edl_api.idempotency import IdempotencyHeader
from edl_api.pagination import Page, PageDep
from edl_api.schemas import DbId, PathId
from edl_api.state import AppState

router = APIRouter(tags=["feeds"], responses=API_ERRORS)

F = TypeVar("F", bound=Callable[..., Any])

_TEXT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"example": "1.10.16.0/20\n198.51.100.7\n"}},
          "description": "the feed, one entry per line"},
    304: {"description": "not modified since the ETag / date the client sent"},
}


def _get_and_head(
    path: str, name: str, errors: tuple[int, ...], **options: Any
) -> Callable[[F], F]:
    """One endpoint for GET and HEAD, each with its own operation id in OpenAPI."""

    extra = options.pop("responses", {})

    def register(func: F) -> F:
        responses = {**_TEXT_RESPONSES, **error_responses(*errors), **extra}
        common = {"response_class": Response, "responses": responses, **options}
        router.get(path, operation_id=name, **common)(func)
        router.head(path, operation_id=f"{name}_head", **common)(func)
        return func

    return register

# The enums are documented, not validated here: `feed_http.parse_feed_request` answers a
# wrong value exactly as the fast path does.
FormatQuery = Annotated[
    str, Query(alias="format", description="the vendor format of the list",
               json_schema_extra={"enum": list(FORMATS)})
]
PortsQuery = Annotated[
    str, Query(alias="ports", description="a URL with a port, which `panos` and `cisco` "
               "cannot load, is dropped (counted) or published as host/path",
               json_schema_extra={"enum": list(feed_http.PORTS_CHOICES)})
]


class FeedResponse(Response):
    """Sends prebuilt header lists as they are (content-length already in them)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
        self.status_code = status
        self.body = payload
        self.background = None
        self.raw_headers = list(headers)


def _answer(request: Request, body: FeedBody) -> FeedResponse:
    status, headers, payload = feed_http.choose(
        body, request.headers, head=request.method == "HEAD"
    )
    return FeedResponse(status, headers, payload)


_FEED_DOC = (
    "text/plain, one entry per line. `ETag` (the artifact's sha256), `Last-Modified`, "
    "`If-None-Match`/`If-Modified-Since` → 304, gzip when accepted, HEAD; headers "
    "`X-EDL-Count`, `X-EDL-Run-Id`, `X-EDL-Dropped` (entries the format's vendor grammar "
    "left out; run detail lists why), `X-EDL-Truncated` (entries cut to fit the polling "
    "device's capacity: a device's feeds of one kind share its model's limit). Auth: "
    "X-API-Key, Bearer, or HTTP Basic with the key as password. Nothing is ever served "
    "empty as if it were a list: a feed not published yet answers 503 `feed_not_ready` "
    "with `Retry-After` (a firewall keeps its last list and retries)."
)
_PIPELINE_FEED_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "`not_found`: no such pipeline in your scope; "
          "`feed_type_not_published`: the pipeline's outputs do not include this type (the "
          "detail names them); `not_a_device_feed`: a device with declared feeds asked for "
          "another feed (the detail says how to add it)"},
    503: {"model": ErrorBody, "description": "`feed_not_ready`: the pipeline has not "
          "published this feed yet (its first run is pending, failed, or was held by the "
          "guard); `feed_changed`: the feed changed while it was read. Retry after "
          "`Retry-After` seconds"},
}
_GLOBAL_FEED_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "`feed_not_ready`: no pipeline in scope has "
          "published a feed of this type yet; `feed_changed`: a member feed changed while it "
          "was read. Retry after `Retry-After` seconds"},
}


_MD5_DOC = (
    "The MD5 (hex, nothing else: Cisco FMC wants \"a simple text file with only the "
    "checksum\") of exactly the bytes the feed URL without `.md5` serves, identity "
    "encoding, for the same `format` and `ports`. FMC needs it for update intervals of 30 "
    "minutes or less. Same auth, scope and errors as the feed."
)
_MD5_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"example": "d41d8cd98f00b204e9800998ecf8427e"}},
          "description": "the feed's MD5, 32 hex digits"},
}


@_get_and_head(
    "/pipelines/{pipeline_id}/edl/{indicator_type}.md5", "pipeline_feed_md5", (503,),
    summary="MD5 of a pipeline's hosted feed (Cisco FMC)", description=_MD5_DOC,
    responses={**_PIPELINE_FEED_ERRORS, **_MD5_RESPONSES},
)
async def pipeline_feed_md5(
    pipeline_id: PathId, indicator_type: str, request: Request, principal: FeedReader,
    session: SessionDep, cache: FeedCacheDep, fmt: FormatQuery = "plain",
    ports: PortsQuery = "drop",
) -> Response:
    return await _md5(request, principal, session, cache)


@_get_and_head(
    "/edl/{indicator_type}.md5", "global_feed_md5", (503,),
    summary="MD5 of the caller's global feed of one type (Cisco FMC)", description=_MD5_DOC,
    responses={**_GLOBAL_FEED_ERRORS, **_MD5_RESPONSES},
)
async def global_feed_md5(
    indicator_type: str, request: Request, principal: FeedReader, session: SessionDep,
    cache: FeedCacheDep, fmt: FormatQuery = "plain", ports: PortsQuery = "drop",
    profile_id: Annotated[DbId | None, Query()] = None,
) -> Response:
    return await _md5(request, principal, session, cache)


def _device_id(principal: Principal) -> int | None:
    """The device whose polls are recorded (`fleet.ledger`); None for any other key."""
    return principal.id if principal.kind == "feed_token" else None


async def _md5(
    request: Request, principal: Principal, session: AsyncSession, cache: FeedCache
) -> Response:
    path: str = request.scope["path"]
    feed: feed_http.FeedRequest | None = None
    try:
        feed = feed_http.parse_feed_request(path.removesuffix(".md5"), request.query_params)
        body = await serving.feed_body(session, cache, principal, feed)
        digest = (await serving.feed_md5(body)).encode()
    except Exception as exc:
        if (device_id := _device_id(principal)) is not None:
            record_failure(_ledger(request), request.scope, device_id, feed, exc, md5=True)
        raise
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(digest)).encode()),
        (b"etag", body.quoted_etag.encode()),
        (b"cache-control", b"no-cache"),
    ]
    if body.stale:
        headers.append(STALE_HEADER)
    payload = b"" if request.method == "HEAD" else digest
    if (device_id := _device_id(principal)) is not None:
        record_answer(_ledger(request), request.scope, device_id, feed, body, 200,
                      len(payload), md5=True)
    return FeedResponse(200, headers, payload)


@_get_and_head(
    "/pipelines/{pipeline_id}/edl/{indicator_type}", "pipeline_feed", (503,),
    summary="A pipeline's hosted feed", description=_FEED_DOC,
    responses=_PIPELINE_FEED_ERRORS,
)
async def pipeline_feed(
    pipeline_id: PathId, indicator_type: str, request: Request, principal: FeedReader,
    session: SessionDep, cache: FeedCacheDep, fmt: FormatQuery = "plain",
    ports: PortsQuery = "drop",
) -> Response:
    return await _feed(request, principal, session, cache)


@_get_and_head(
    "/edl/{indicator_type}", "global_feed", (503,),
    summary="The union of the caller's active pipelines' feeds of one type",
    description=_FEED_DOC + " De-duplicated; cidr and ip feeds are aggregated.",
    responses=_GLOBAL_FEED_ERRORS,
)
async def global_feed(
    indicator_type: str, request: Request, principal: FeedReader, session: SessionDep,
    cache: FeedCacheDep, fmt: FormatQuery = "plain", ports: PortsQuery = "drop",
    profile_id: Annotated[DbId | None, Query()] = None,
) -> Response:
    return await _feed(request, principal, session, cache)


async def _feed(
    request: Request, principal: Principal, session: AsyncSession, cache: FeedCache
) -> Response:
    # The feed routes declare their parameters for OpenAPI and validation; what they
    # serve is read from the URL exactly as the fast path reads it.
    device_id = _device_id(principal)
    feed: feed_http.FeedRequest | None = None
    try:
        feed = feed_http.parse_feed_request(request.scope["path"], request.query_params)
        body = await serving.feed_body(session, cache, principal, feed)
    except Exception as exc:  # recorded for a device (404/422/503), then answered as ever
        if device_id is not None:
            record_failure(_ledger(request), request.scope, device_id, feed, exc)
        raise
    response = _answer(request, body)
    if device_id is not None:
        record_answer(_ledger(request), request.scope, device_id, feed, body,
                      response.status_code, len(response.body))
    return response


def _ledger(request: Request) -> PollLedger:
    return AppState.of(request.app).ledger


@router.post(
    "/profiles/{profile_id}/feed-tokens", status_code=201, response_model=FeedTokenCreated,
    summary="Create a read-only feed token (shown once): a device without declared feeds",
    tags=["profiles"],
)
async def create_feed_token(
    profile_id: PathId, body: FeedTokenCreate, principal: Writer, session: SessionDep,
    state: AppStateDep, idempotency_key: IdempotencyHeader = None,
) -> FeedTokenCreated:
    idem = idempotency.make_request(
        principal, "feed_tokens.create", idempotency_key, body, {"profile_id": profile_id}
    )
    return await tokens.create_token(
        session, principal, profile_id, body, idem, state.verifier, state.settings.bcrypt_rounds
    )


@router.get(
    "/profiles/{profile_id}/feed-tokens", response_model=Page[FeedTokenPublic],
    summary="List a profile's feed tokens (no secrets)", tags=["profiles"],
)
async def list_feed_tokens(
    profile_id: PathId, principal: Writer, session: SessionDep, page: PageDep,
    include_revoked: Annotated[bool, Query()] = False,
) -> Page[FeedTokenPublic]:
    return await tokens.list_tokens(session, principal, profile_id, page, include_revoked)


@router.delete(
    "/profiles/{profile_id}/feed-tokens/{token_id}", response_model=FeedTokenPublic,
    summary="Revoke a feed token (it stops working at once)", tags=["profiles"],
)
async def revoke_feed_token(
    profile_id: PathId, token_id: PathId, principal: Writer, session: SessionDep
) -> FeedTokenPublic:
    return await tokens.revoke_token(session, principal, profile_id, token_id)


@router.get(
    "/profiles/{profile_id}/pipelines/active", response_model=ActivePipelines,
    summary="Pipelines that host data now, with their feeds and schedule", tags=["profiles"],
)
async def active_pipelines(
    profile_id: PathId, principal: Caller, session: SessionDep, settings: SettingsDep
) -> ActivePipelines:
    return await service.active_pipelines(session, principal, profile_id, settings)


@router.get(
    "/profiles/{profile_id}/pipelines/search", response_model=SearchResult,
    summary="Which of the profile's feeds hold an indicator (networks and wildcards count)",
    tags=["profiles"],
)
async def search_indicator(
    profile_id: PathId, principal: Caller, session: SessionDep,
    indicator: Annotated[str, Query(min_length=1, max_length=2048)],
) -> SearchResult:
    return await service.search(session, principal, profile_id, indicator)


@_get_and_head(
    "/runs/{run_id}/artifacts/{indicator_type}", "run_artifact", (410,),
    summary="Download a run's stored artifact (dry runs included)", tags=["runs"],
)
async def run_artifact(
    run_id: PathId, indicator_type: str, request: Request, principal: Caller, session: SessionDep
) -> Response:
    body, artifact = await service.run_artifact(session, principal, run_id, indicator_type)
    response = _answer(request, body)
    response.raw_headers.append((b"x-edl-published", b"true" if artifact.published else b"false"))
    return response


@router.get(
    "/profiles/{profile_id}/explain", response_model=ExplainResult,
    summary="Why an indicator is (not) listed: per pipeline and feed, the covering entry or "
    "the step that removed it in the latest run", tags=["profiles"],
)
async def explain_indicator(
    profile_id: PathId, principal: Caller, session: SessionDep,
    indicator: Annotated[str, Query(min_length=1, max_length=2048)],
    pipeline_id: Annotated[DbId | None, Query()] = None,
) -> ExplainResult:
    return await explain_service.explain(session, principal, profile_id, indicator, pipeline_id)
