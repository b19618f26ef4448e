"""Who is calling, and what that caller may touch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Mapped
from sqlmodel import col

from edl_api.errors import Forbidden, NotFound
from edl_api.fleet.spec import DeviceSpec
from edl_api.models import Profile

# Few rows (deleted profiles waiting for their purge); `ix_profiles_deleted_at` finds them.
_DELETED_PROFILES = select(col(Profile.id)).where(col(Profile.deleted_at).is_not(None))

Kind = Literal["admin", "legacy", "profile", "feed_token"]
Role = Literal["super", "operator", "reader", "profile", "feed"]


@dataclass(frozen=True)
class Principal:
    kind: Kind
    role: Role
    id: int | None = None
    is_super_admin: bool = False
    # None means every profile (super-admins and the legacy global keys).
    profile_ids: frozenset[int] | None = frozenset()
    # Feed tokens only: the pipelines they may read; None means all of their profile's.
    pipeline_ids: frozenset[int] | None = None
    # Stable, non-secret identity used to scope idempotency keys.
    scope_key: str = ""
    # Device credentials (kind "feed_token"): the device's feeds and capacity.
    device: DeviceSpec | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind in ("admin", "legacy")

    @property
    def can_write(self) -> bool:
        return self.role in ("super", "operator", "profile")

    def scope_filter(
        self,
        profile_column: Mapped[Any] | ColumnElement[Any],
        pipeline_column: Mapped[Any] | ColumnElement[Any] | None = None,
    ) -> ColumnElement[bool]:
        """What this caller may read, as one WHERE clause for every list, search and lookup.

        A row outside it is simply not found, so a foreign id is the same 404 as a missing
        one. Give `pipeline_column` where rows belong to a pipeline (a feed token's limit).
        `sees_profile`/`sees_pipeline` are the same rule for objects already in memory.
        """
        # A deleted profile (`DELETE /profiles/{id}`) is missing for every caller.
        clauses: list[ColumnElement[bool]] = [profile_column.not_in(_DELETED_PROFILES)]
        if self.profile_ids is not None:
            clauses.append(profile_column.in_(self.profile_ids))
        if pipeline_column is not None and self.pipeline_ids is not None:
            clauses.append(pipeline_column.in_(self.pipeline_ids))
        return and_(*clauses)

    def sees_profile(self, profile_id: int) -> bool:
        return self.profile_ids is None or profile_id in self.profile_ids

    def require_profile(self, profile_id: int, *, write: bool = False) -> None:
        """404 outside the caller's scope (same as missing), 403 for a read-only caller."""
        if not self.sees_profile(profile_id):
            raise NotFound("not found")
        if write and not self.can_write:
            raise Forbidden("this key may not change anything")

    def sees_pipeline(self, profile_id: int, pipeline_id: int) -> bool:
        if not self.sees_profile(profile_id):
            return False
        return self.pipeline_ids is None or pipeline_id in self.pipeline_ids
