"""Idempotent creates: a unique (scope, key) row remembers the first response."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Header
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.auth.principal import Principal
from edl_api.errors import Unprocessable
from edl_api.models import IdempotencyRecord, utcnow

MAX_KEY_LENGTH = 200

S = TypeVar("S", bound=BaseModel)


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class IdempotencyRequest:
    scope: str
    key: str
    request_hash: str


IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


def make_request(
    principal: Principal,
    action: str,
    header_key: str | None,
    body: BaseModel,
    extra: dict[str, Any] | None = None,
) -> IdempotencyRequest | None:
    body_key = getattr(body, "idempotency_key", None)
    if header_key and body_key and header_key != body_key:
        raise Unprocessable("Idempotency-Key header and idempotency_key field differ")
    key = header_key or body_key
    if not key:
        return None
    if len(key) > MAX_KEY_LENGTH:
        raise Unprocessable(f"idempotency key longer than {MAX_KEY_LENGTH} characters")
    payload = body.model_dump(mode="json", exclude={"idempotency_key"})
    payload["__extra__"] = extra or {}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return IdempotencyRequest(f"{principal.scope_key}:{action}", key, digest)


async def replay(session: AsyncSession, request: IdempotencyRequest) -> dict[str, Any] | None:
    record = (
        await session.execute(
            select(IdempotencyRecord).where(
                col(IdempotencyRecord.scope) == request.scope,
                col(IdempotencyRecord.key) == request.key,
            )
        )
    ).scalar_one_or_none()
    if record is None:
        return None
    if record.request_hash != request.request_hash:
        raise IdempotencyKeyReused("this idempotency key was used with a different body")
    return dict(record.response)


async def remember(
    session: AsyncSession, request: IdempotencyRequest, response: dict[str, Any]
) -> dict[str, Any] | None:
    """Store the response. None if ours is kept; if a concurrent request won the race,
    undo ours and return theirs."""
    session.add(
        IdempotencyRecord(
            scope=request.scope,
            key=request.key,
            request_hash=request.request_hash,
            response=response,
        )
    )
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        winner = await replay(session, request)
        if winner is None:  # pragma: no cover - the unique row must exist after the conflict
            raise
        return winner
    return None


async def replay_or_create(
    session: AsyncSession,
    request: IdempotencyRequest | None,
    schema: type[S],
    create: Callable[[], Awaitable[S]],
    *,
    secret: str | None = None,
) -> S:
    """The response stored for a repeated request, else `create()`'s, remembered.

    Call it after the scope and role checks, so a replay never skips them. `secret`
    names a field (a new key or token) shown once and never stored: a replay has it null.
    """
    if request is None:
        return await create()
    if (stored := await replay(session, request)) is not None:
        return schema.model_validate(stored)
    response = await create()
    document = response.model_dump(mode="json")
    if secret is not None:
        document[secret] = None
    winner = await remember(session, request, document)
    return response if winner is None else schema.model_validate(winner)


async def prune(session: AsyncSession, older_than_hours: float) -> int:
    cutoff = utcnow() - timedelta(hours=older_than_hours)
    result = await session.execute(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < cutoff)
    )
    return int(getattr(result, "rowcount", 0) or 0)
