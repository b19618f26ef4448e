"""`/profiles/{profile_id}/webhooks`: where a profile's alerts go, and what was sent."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from edl_api.alerts import service
from edl_api.alerts.schemas import DeliveryPublic, WebhookCreate, WebhookPublic
from edl_api.auth.deps import Caller, Writer
from edl_api.db import SessionDep
from edl_api.deps import SettingsDep
from edl_api.errors import API_ERRORS
from edl_api.pagination import Page, PageDep
from edl_api.schemas import PathId

router = APIRouter(tags=["webhooks"], responses=API_ERRORS)


@router.post(
    "/profiles/{profile_id}/webhooks", status_code=201, response_model=WebhookPublic,
    summary="Add a webhook: the events it takes are POSTed to its URL, signed when a "
    "secret is given",
)
async def create_webhook(
    profile_id: PathId, body: WebhookCreate, principal: Writer, session: SessionDep,
    settings: SettingsDep,
) -> WebhookPublic:
    return await service.create_webhook(session, principal, settings, profile_id, body)


@router.get(
    "/profiles/{profile_id}/webhooks", response_model=Page[WebhookPublic],
    summary="The profile's webhooks (never their secrets)",
)
async def list_webhooks(
    profile_id: PathId, principal: Caller, session: SessionDep, page: PageDep
) -> Page[WebhookPublic]:
    return await service.list_webhooks(session, principal, profile_id, page)


@router.get(
    "/profiles/{profile_id}/webhooks/{webhook_id}", response_model=WebhookPublic,
    summary="One webhook",
)
async def get_webhook(
    profile_id: PathId, webhook_id: PathId, principal: Caller, session: SessionDep
) -> WebhookPublic:
    return await service.get_webhook(session, principal, profile_id, webhook_id)


@router.delete(
    "/profiles/{profile_id}/webhooks/{webhook_id}", status_code=204, response_class=Response,
    summary="Delete a webhook and its deliveries (pending ones are never sent)",
)
async def delete_webhook(
    profile_id: PathId, webhook_id: PathId, principal: Writer, session: SessionDep
) -> Response:
    await service.delete_webhook(session, principal, profile_id, webhook_id)
    return Response(status_code=204)


@router.post(
    "/profiles/{profile_id}/webhooks/{webhook_id}/test", status_code=202,
    response_model=DeliveryPublic,
    summary="Queue a `test` delivery to this webhook (see it under …/deliveries)",
)
async def test_webhook(
    profile_id: PathId, webhook_id: PathId, principal: Writer, session: SessionDep
) -> DeliveryPublic:
    return await service.send_test(session, principal, profile_id, webhook_id)


@router.get(
    "/profiles/{profile_id}/webhooks/{webhook_id}/deliveries",
    response_model=Page[DeliveryPublic],
    summary="The webhook's deliveries, newest first: state, attempts, each attempt's status",
)
async def list_deliveries(
    profile_id: PathId, webhook_id: PathId, principal: Caller, session: SessionDep,
    page: PageDep,
    state: Annotated[
        Literal["pending", "delivered", "failed"] | None, Query(description="only these")
    ] = None,
) -> Page[DeliveryPublic]:
    return await service.list_deliveries(session, principal, profile_id, webhook_id, page,
                                         state)
