"""Who is calling, and what that caller may touch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edl_api.errors import Forbidden, NotFound

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

    @property
    def is_admin(self) -> bool:
        return self.kind in ("admin", "legacy")

    @property
    def can_write(self) -> bool:
        return self.role in ("super", "operator", "profile")

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
