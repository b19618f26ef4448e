"""Unique names: a profile or admin account name is taken while a live row has it.

The unique indexes of migration 0011 are the rule (they settle a race); the look-up first
gives the caller a 409 that says which name and where to find the existing one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.errors import Conflict
from edl_api.models import AdminAccount, Profile


class NameTaken(Conflict):
    code = "name_taken"


def _live(model: type[Profile] | type[AdminAccount]) -> ColumnElement[bool]:
    if model is Profile:
        return col(Profile.deleted_at).is_(None)
    return col(AdminAccount.revoked_at).is_(None)


def _taken(model: type[Profile] | type[AdminAccount], name: str, where: str) -> NameTaken:
    what = "profile" if model is Profile else "admin account"
    return NameTaken(
        f"a {what} named {name!r} already exists (names are unique); choose another name, "
        f"or use the existing one ({where})"
    )


async def existing_id(
    session: AsyncSession, model: type[Profile] | type[AdminAccount], name: str
) -> int | None:
    """The id of the live row named `name`, if any."""
    found = await session.execute(
        select(col(model.id)).where(col(model.name) == name, _live(model)).limit(1)
    )
    return found.scalar_one_or_none()


async def add_unique(
    session: AsyncSession, row: Profile | AdminAccount, where: str
) -> None:
    """Add and flush `row`; 409 `name_taken` when a live row already has its name.
    `where` tells the caller how to find that one (e.g. `GET /profiles`)."""
    model: Any = type(row)
    if await existing_id(session, model, row.name) is not None:
        raise _taken(model, row.name, where)
    try:
        async with session.begin_nested():  # a concurrent create of the same name may win
            session.add(row)
    except IntegrityError:
        if await existing_id(session, model, row.name) is None:
            raise
        raise _taken(model, row.name, where) from None
