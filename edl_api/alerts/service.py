"""Webhooks of a profile: writers create and delete them, readers read them and their
deliveries. Another profile's webhook is the same 404 as a missing one."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.alerts import send
from edl_api.alerts.events import Alert
from edl_api.alerts.schemas import DeliveryPublic, WebhookCreate, WebhookPublic, display_url
from edl_api.auth.principal import Principal
from edl_api.errors import NotFound, Unprocessable
from edl_api.models import Webhook, WebhookDelivery
from edl_api.pagination import Page, PageParams
from edl_api.profiles.service import get_profile
from edl_api.secrets.crypto import keyring
from edl_api.settings import Settings

MAX_WEBHOOKS_PER_PROFILE = 20


def public(webhook: Webhook) -> WebhookPublic:
    assert webhook.id is not None
    return WebhookPublic(
        id=webhook.id, profile_id=webhook.profile_id, url=display_url(webhook.url),
        events=list(webhook.events), format=webhook.format,
        signed=webhook.secret_ciphertext is not None, created_at=webhook.created_at,
    )


def delivery_public(delivery: WebhookDelivery) -> DeliveryPublic:
    data = delivery.model_dump()
    if delivery.state != "pending":
        data["next_attempt_at"] = None
    return DeliveryPublic.model_validate(data)


async def webhook_in_scope(
    session: AsyncSession, principal: Principal, profile_id: int, webhook_id: int,
    *, write: bool = False,
) -> Webhook:
    await get_profile(session, principal, profile_id)  # 404 outside the caller's scope
    principal.require_profile(profile_id, write=write)
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None or webhook.profile_id != profile_id:
        raise NotFound("not found")
    return webhook


async def create_webhook(
    session: AsyncSession, principal: Principal, settings: Settings, profile_id: int,
    body: WebhookCreate,
) -> WebhookPublic:
    profile = await get_profile(session, principal, profile_id)
    principal.require_profile(profile_id, write=True)
    policy = send.policy_for(settings.ssrf_allow_cidrs, settings.ssrf_allow_hosts,
                             profile.ssrf_allow_cidrs or [], profile.ssrf_allow_hosts or [])
    refusal = send.literal_refusal(body.url, policy)
    if refusal is not None:  # a name is judged when a delivery resolves it
        raise Unprocessable(
            [{"loc": ["body", "url"], "type": "ssrf_refused", "msg": refusal}],
            code="validation_error",
        )
    count = (await session.execute(
        select(func.count()).where(col(Webhook.profile_id) == profile_id)
    )).scalar_one()
    if count >= MAX_WEBHOOKS_PER_PROFILE:
        raise Unprocessable(f"a profile may have at most {MAX_WEBHOOKS_PER_PROFILE} webhooks",
                            code="too_many_webhooks")
    webhook = Webhook(
        profile_id=profile_id, url=body.url, events=list(body.events), format=body.format,
        secret_ciphertext=None if body.secret is None else keyring(settings).encrypt(body.secret),
    )
    session.add(webhook)
    await session.flush()
    return public(webhook)


async def list_webhooks(
    session: AsyncSession, principal: Principal, profile_id: int, page: PageParams
) -> Page[WebhookPublic]:
    await get_profile(session, principal, profile_id)
    where = col(Webhook.profile_id) == profile_id
    total = (await session.execute(select(func.count()).where(where))).scalar_one()
    rows = (await session.execute(
        select(Webhook).where(where).order_by(col(Webhook.id))
        .limit(page.limit).offset(page.offset)
    )).scalars()
    return Page(items=[public(row) for row in rows], total=int(total), limit=page.limit,
                offset=page.offset)


async def get_webhook(
    session: AsyncSession, principal: Principal, profile_id: int, webhook_id: int
) -> WebhookPublic:
    return public(await webhook_in_scope(session, principal, profile_id, webhook_id))


async def delete_webhook(
    session: AsyncSession, principal: Principal, profile_id: int, webhook_id: int
) -> None:
    """The webhook and its deliveries (pending ones are never sent)."""
    webhook = await webhook_in_scope(session, principal, profile_id, webhook_id, write=True)
    await session.delete(webhook)
    await session.flush()


async def send_test(
    session: AsyncSession, principal: Principal, profile_id: int, webhook_id: int
) -> DeliveryPublic:
    """A `test` delivery to this webhook alone, whatever events it takes."""
    webhook = await webhook_in_scope(session, principal, profile_id, webhook_id, write=True)
    assert webhook.id is not None
    alert = Alert("test", profile_id, "test alert from the EDL platform",
                  "if you can read this, alerts reach you")
    delivery = WebhookDelivery(webhook_id=webhook.id, event="test", payload=alert.payload())
    session.add(delivery)
    await session.flush()
    return delivery_public(delivery)


async def list_deliveries(
    session: AsyncSession, principal: Principal, profile_id: int, webhook_id: int,
    page: PageParams, state: str | None,
) -> Page[DeliveryPublic]:
    await webhook_in_scope(session, principal, profile_id, webhook_id)
    where = [col(WebhookDelivery.webhook_id) == webhook_id]
    if state is not None:
        where.append(col(WebhookDelivery.state) == state)
    total = (await session.execute(select(func.count()).where(*where))).scalar_one()
    rows = (await session.execute(
        select(WebhookDelivery).where(*where).order_by(col(WebhookDelivery.id).desc())
        .limit(page.limit).offset(page.offset)
    )).scalars()
    return Page(items=[delivery_public(row) for row in rows], total=int(total),
                limit=page.limit, offset=page.offset)

