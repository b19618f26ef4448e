"""TAXII 2.1 read-only routes (`/taxii2/`): discovery, API roots, collections, objects,
manifests. Thin: the rules are in `service`, the paging in `views`.

Every answer, errors included, is `application/taxii+json;version=2.1`; errors are TAXII
error messages (`TaxiiRoute` turns the app's own errors, auth included, into them).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from edl_api.auth.deps import FeedReader
from edl_api.db import SessionDep
from edl_api.deps import FeedCacheDep
from edl_api.errors import AppError
from edl_api.schemas import PathId
from edl_api.taxii import service, views
from edl_api.taxii.schemas import (
    ApiRootResource,
    CollectionResource,
    CollectionsResource,
    DiscoveryResource,
    EnvelopeResource,
    ManifestResource,
    TaxiiErrorBody,
)
from edl_api.taxii.service import TAXII_MEDIA_TYPE, TaxiiError

_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
           406: "Not acceptable", 422: "Bad request", 503: "Service unavailable"}


class TaxiiResponse(JSONResponse):
    """Prebuilt JSON bytes as they are (a JSONResponse, so OpenAPI shows the models)."""

    media_type = TAXII_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else super().render(content)


def _error(exc: TaxiiError) -> Response:
    return TaxiiResponse(orjson.dumps(exc.body()), status_code=exc.status, headers=exc.headers)


def _from_app_error(exc: AppError) -> TaxiiError:
    status = 400 if exc.status_code == 422 else exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else exc.code.replace("_", " ")
    return TaxiiError(status, _TITLES.get(status, "Error"), detail, exc.headers)


def _acceptable(accept: str | None) -> bool:
    """Whether Accept allows the TAXII 2.1 media type (TAXII 2.1 1.6.8.1: else 406)."""
    if not accept:
        return True
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        version = next((p.split("=", 1)[1].strip() for p in params
                        if p.startswith("version=")), None)
        if media in ("*/*", "application/*") or (
            media == "application/taxii+json" and version in (None, "2.1")
        ):
            return True
    return False


class TaxiiRoute(APIRoute):
    """Answers every error of a TAXII route as a TAXII error message."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def taxii_handler(request: Request) -> Response:
            try:
                if not _acceptable(request.headers.get("accept")):
                    raise TaxiiError(406, "Not acceptable",
                                     f"this server answers {TAXII_MEDIA_TYPE} only: send "
                                     f"Accept: {TAXII_MEDIA_TYPE}")
                return await handler(request)
            except TaxiiError as exc:
                return _error(exc)
            except RequestValidationError as exc:
                if any(tuple(e.get("loc", ()))[:1] == ("path",) for e in exc.errors()):
                    return _error(service.not_found())  # an id out of range names nothing
                fields = ", ".join(str(e.get("loc", ("", "?"))[-1]) for e in exc.errors())
                return _error(service.bad_request(f"invalid query parameter: {fields}"))
            except AppError as exc:
                return _error(_from_app_error(exc))

        return taxii_handler


router = APIRouter(prefix="/taxii2", tags=["taxii"], route_class=TaxiiRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": TaxiiErrorBody, "description": text} for status, text in (
        (400, "a filter, limit or next token the server cannot read"),
        (401, "missing or unknown key (WWW-Authenticate: Basic)"),
        (403, "the key is known but may not read this (what is out of scope is 404)"),
        (404, "no such API root or collection in your scope (identical to a missing one)"),
        (406, "the Accept header allows no TAXII 2.1 media type"),
        (503, "the database is unavailable for a moment; retry after Retry-After seconds"),
    )
}
_AUTH = ("Auth: the credentials feeds take: HTTP Basic with a feed/device token or key as "
         "the password, X-API-Key, or Bearer; the feeds' scope rules apply.")


def _answer(payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return TaxiiResponse(body, headers=headers)


@router.get("/", response_model=DiscoveryResource, response_class=TaxiiResponse,
            responses=_ERRORS, operation_id="taxii_discovery",
            summary="TAXII 2.1 discovery: the API roots (profiles) you can read",
            description=_AUTH)
async def discovery(request: Request, principal: FeedReader, session: SessionDep) -> Response:
    return _answer(await service.discovery(session, principal, str(request.base_url)))


@router.get("/{profile_id}/", response_model=ApiRootResource, response_class=TaxiiResponse,
            responses=_ERRORS, operation_id="taxii_api_root",
            summary="A profile's TAXII 2.1 API root", description=_AUTH)
async def api_root(profile_id: PathId, principal: FeedReader, session: SessionDep) -> Response:
    return _answer(await service.api_root(session, principal, profile_id))


@router.get("/{profile_id}/collections/", response_model=CollectionsResource,
            response_class=TaxiiResponse, responses=_ERRORS, operation_id="taxii_collections",
            summary="The profile's collections: one per feed a pipeline hosts",
            description=_AUTH)
async def collections(profile_id: PathId, principal: FeedReader, session: SessionDep) -> Response:
    found = await service.feeds(session, principal, profile_id)
    return _answer({"collections": [feed.resource() for feed in found]} if found else {})


@router.get("/{profile_id}/collections/{collection_id}/", response_model=CollectionResource,
            response_class=TaxiiResponse, responses=_ERRORS, operation_id="taxii_collection",
            summary="One collection", description=_AUTH)
async def collection(
    profile_id: PathId, collection_id: str, principal: FeedReader, session: SessionDep
) -> Response:
    return _answer((await service.collection(session, principal, profile_id,
                                             collection_id)).resource())


AddedAfter = Annotated[str | None, Query(
    description="only objects added (first seen) strictly later than this timestamp",
    json_schema_extra={"format": "date-time"})]
Limit = Annotated[int | None, Query(
    ge=1, description=f"objects per page (default {views.DEFAULT_LIMIT}, at most "
    f"{views.MAX_LIMIT}; more is served as the cap)")]
Next = Annotated[str | None, Query(description="the `next` of the previous page")]
MatchId = Annotated[str | None, Query(alias="match[id]", description="comma-separated ids")]
MatchType = Annotated[str | None, Query(
    alias="match[type]", description="comma-separated types; only `indicator` has objects")]
MatchVersion = Annotated[str | None, Query(
    alias="match[version]", description="last, first, all, or timestamps")]
MatchSpec = Annotated[str | None, Query(alias="match[spec_version]", description="2.1")]
_PAGING = (" Ordered by (date_added, id); date_added is the entry's first_seen. The page's "
           "first and last date_added are in X-TAXII-Date-Added-First / -Last. " + _AUTH)


async def _page(
    request: Request, principal: Any, session: Any, cache: Any, profile_id: int,
    collection_id: str, envelope: Callable[[views.CollectionView, views.Page], bytes],
) -> Response:
    feed = await service.collection(session, principal, profile_id, collection_id)
    query = service.read_query(request.query_params)
    view = await service.view(session, cache, principal, feed)
    page = views.select(view, query)
    stamps = views.added_range(view, page)
    headers = None if stamps is None else {
        "X-TAXII-Date-Added-First": stamps[0], "X-TAXII-Date-Added-Last": stamps[1]}
    return _answer(envelope(view, page), headers)


def _paging(
    added_after: AddedAfter = None, limit: Limit = None, next: Next = None,  # noqa: A002
    match_id: MatchId = None, match_type: MatchType = None,
    match_version: MatchVersion = None, match_spec_version: MatchSpec = None,
) -> None:
    """The paging and filter parameters, declared once for validation and OpenAPI; their
    values are read from the query by `service.read_query`."""


Paging = Annotated[None, Depends(_paging)]


@router.get("/{profile_id}/collections/{collection_id}/objects/",
            response_model=EnvelopeResource, response_class=TaxiiResponse, responses=_ERRORS,
            operation_id="taxii_objects", summary="A collection's STIX 2.1 indicators",
            description=_PAGING)
async def objects(
    profile_id: PathId, collection_id: str, request: Request, principal: FeedReader,
    session: SessionDep, cache: FeedCacheDep, _paging: Paging,
) -> Response:
    return await _page(request, principal, session, cache, profile_id, collection_id,
                       views.objects_envelope)


@router.get("/{profile_id}/collections/{collection_id}/manifest/",
            response_model=ManifestResource, response_class=TaxiiResponse, responses=_ERRORS,
            operation_id="taxii_manifest", summary="A collection's object manifests",
            description=_PAGING)
async def manifest(
    profile_id: PathId, collection_id: str, request: Request, principal: FeedReader,
    session: SessionDep, cache: FeedCacheDep, _paging: Paging,
) -> Response:
    return await _page(request, principal, session, cache, profile_id, collection_id,
                       views.manifest_envelope)
