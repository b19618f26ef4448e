"""The delivery worker: every process sends what is due from the outbox.

Claiming is one short transaction: due `pending` rows are locked `FOR UPDATE SKIP LOCKED`
(PostgreSQL: a row another process is claiming is skipped, never waited on; SQLite is one
process) and leased — `next_attempt_at` moves past the attempt's timeout — so nothing
else takes them while the POST runs outside any transaction. The result is written only
if the row still has the attempt count it was claimed with (a lease that ran out and was
taken again elsewhere is not overwritten). A failed attempt is retried after
EDL_WEBHOOK_RETRY_SECONDS, doubling, until EDL_WEBHOOK_MAX_ATTEMPTS; every attempt's
status is kept on the row. The same loop runs the periodic checks (`alerts.checks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.alerts import checks, formats, send, signing
from edl_api.engine.sources import Resolver
from edl_api.models import Profile, Webhook, WebhookDelivery, utcnow
from edl_api.secrets.crypto import SecretsKeyError, keyring
from edl_api.settings import Settings

logger = logging.getLogger("edl_api.alerts")

CLAIM_BATCH = 20
LEASE_MARGIN_SECONDS = 30.0
ERROR_MAX_CHARS = 500


@dataclass
class Attempt:
    status: int | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def retry_after(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt, after `attempts` failed ones."""
    return float(settings.webhook_retry_seconds * 2 ** max(attempts - 1, 0))


async def claim(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> list[tuple[int, int]]:
    """(id, attempts) of due deliveries, leased to this process."""
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        rows = (await session.execute(
            select(col(WebhookDelivery.id), col(WebhookDelivery.attempts))
            .where(col(WebhookDelivery.state) == "pending",
                   col(WebhookDelivery.next_attempt_at) <= now)
            .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
            .limit(CLAIM_BATCH)
            .with_for_update(skip_locked=True)
        )).all()
        if not rows:
            return []
        lease = now + timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
        await session.execute(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id).in_([row[0] for row in rows]))
            .values(next_attempt_at=lease)
        )
    return [(int(row[0] or 0), int(row[1])) for row in rows]


async def attempt(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient, delivery_id: int, resolver: Resolver | None = None,
) -> Attempt:
    """Render, sign and POST one delivery (no transaction is open meanwhile)."""
    async with sessionmaker() as session:
        row = (await session.execute(
            select(WebhookDelivery, Webhook, Profile)
            .join(Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id))
            .join(Profile, col(Profile.id) == col(Webhook.profile_id))
            .where(col(WebhookDelivery.id) == delivery_id)
        )).first()
    started = time.monotonic()
    if row is None:
        return Attempt(None, "the webhook is gone", 0.0)
    delivery, webhook, profile = row
    body = formats.body(webhook.format, delivery.payload)
    headers = {"X-EDL-Event": delivery.event, "X-EDL-Delivery": str(delivery.id)}
    try:
        if webhook.secret_ciphertext is not None:
            secret = await asyncio.to_thread(
                keyring(settings).decrypt, webhook.secret_ciphertext
            )
            headers[signing.HEADER] = signing.sign(secret, body)
        policy = send.policy_for(
            settings.ssrf_allow_cidrs, settings.ssrf_allow_hosts,
            profile.ssrf_allow_cidrs or [], profile.ssrf_allow_hosts or [],
        )
        status = await send.post(client, webhook.url, body, headers, policy,
                                 settings.webhook_timeout_seconds, resolver)
    except (send.SendError, SecretsKeyError, ValueError) as exc:
        return Attempt(None, str(exc)[:ERROR_MAX_CHARS], time.monotonic() - started)
    error = None if 200 <= status < 300 else f"HTTP {status}"
    return Attempt(status, error, time.monotonic() - started)


async def record(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], delivery_id: int,
    claimed_attempts: int, result: Attempt,
) -> str | None:
    """The attempt on the row (if it is still ours); the row's new state."""
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        delivery = (await session.execute(
            select(WebhookDelivery).where(
                col(WebhookDelivery.id) == delivery_id,
                col(WebhookDelivery.attempts) == claimed_attempts,
                col(WebhookDelivery.state) == "pending",
            ).with_for_update()
        )).scalar_one_or_none()
        if delivery is None:
            return None
        delivery.attempts = claimed_attempts + 1
        delivery.last_status, delivery.last_error = result.status, result.error
        delivery.attempt_log = [*delivery.attempt_log, {
            "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "status": result.status,
            "error": result.error, "seconds": round(result.seconds, 3),
        }]
        if result.ok:
            delivery.state, delivery.finished_at = "delivered", now
        elif delivery.attempts >= settings.webhook_max_attempts:
            delivery.state, delivery.finished_at = "failed", now
        else:
            delivery.next_attempt_at = now + timedelta(
                seconds=retry_after(settings, delivery.attempts)
            )
        state = delivery.state
    if state == "failed":
        logger.warning("webhook delivery %s failed after %d attempts: %s", delivery_id,
                       claimed_attempts + 1, result.error)
    return state


class DeliveryWorker:
    """Started and stopped by the app's lifespan; one per process."""

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], *,
        resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.resolver = resolver
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._last_check = 0.0
        self._failing = False

    def start(self) -> None:
        self._client = send.make_client()
        self._task = asyncio.create_task(self._loop(), name="edl-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self._failing:  # a database outage fails every tick: log it once
                    logger.exception("webhook worker tick failed (retrying)")
                self._failing = True
            await asyncio.sleep(self.settings.webhook_poll_seconds)

    async def tick(self) -> int:
        """Send what is due; every EDL_ALERT_CHECK_SECONDS run the periodic checks."""
        now = time.monotonic()
        if now - self._last_check >= self.settings.alert_check_seconds:
            self._last_check = now
            await checks.run_checks(self.settings, self.sessionmaker)
        claimed = await claim(self.settings, self.sessionmaker)
        assert self._client is not None
        client = self._client

        async def one(delivery_id: int, attempts: int) -> None:
            result = await attempt(self.settings, self.sessionmaker, client, delivery_id,
                                   self.resolver)
            await record(self.settings, self.sessionmaker, delivery_id, attempts, result)

        await asyncio.gather(*(one(i, n) for i, n in claimed))
        return len(claimed)
