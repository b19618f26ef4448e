"""Rotation and revocation of a profile's own `edlp_` key.

The old key stops working at once in this process (its verified principal is dropped at
commit) and within `EDL_KEY_REVOCATION_POLL_SECONDS` elsewhere (`auth.revocation` drops
every cached principal of a profile whose `key_rotated_at` moved). Feed tokens made with
the old key are their own credentials and keep working; admin keys linked to the profile
are unaffected.
"""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from edl_api.auth import keys
from edl_api.auth.principal import Principal
from edl_api.auth.verifier import KeyVerifier
from edl_api.feeds.hooks import drop_key_after_commit
from edl_api.models import Profile, utcnow
from edl_api.profiles.schemas import ProfileKeyRotated
from edl_api.profiles.service import get_profile

# A revoked profile's key id: `-` is outside the key alphabet, so no key parses to it,
# and the random part keeps the column unique. Its hash is not a bcrypt hash either.
REVOKED_ID_PREFIX = "revoked-"
REVOKED_HASH = "!revoked"


def is_revoked(profile: Profile) -> bool:
    return profile.key_id.startswith(REVOKED_ID_PREFIX)


async def _writable_profile(
    session: AsyncSession, principal: Principal, profile_id: int
) -> Profile:
    """Super-admins, operators linked to the profile and the profile key itself: others
    in scope get 403 (the `writer` dependency), anyone else 404."""
    profile = await get_profile(session, principal, profile_id)
    principal.require_profile(profile_id, write=True)
    return profile


def _replace_key(session: AsyncSession, profile: Profile, key_id: str, key_hash: str) -> None:
    if not is_revoked(profile):
        profile.previous_key_id = profile.key_id
        drop_key_after_commit(session, profile.key_id)  # here at commit; elsewhere by poll
    profile.key_id, profile.key_hash = key_id, key_hash
    profile.key_rotated_at = utcnow()


async def rotate_key(
    session: AsyncSession,
    principal: Principal,
    profile_id: int,
    verifier: KeyVerifier,
    rounds: int,
) -> ProfileKeyRotated:
    """A new key, shown once. No Idempotency-Key: a replay could not show the key again,
    and a retried rotation simply issues another one (the unseen key is dead already)."""
    profile = await _writable_profile(session, principal, profile_id)
    new_key = await verifier.hash_new(keys.PROFILE_PREFIX, rounds)
    _replace_key(session, profile, new_key.key_id, new_key.key_hash)
    await session.flush()
    assert profile.key_rotated_at is not None
    return ProfileKeyRotated(
        profile_id=profile_id, api_key=new_key.plaintext, key_rotated_at=profile.key_rotated_at
    )


async def revoke_key(session: AsyncSession, principal: Principal, profile_id: int) -> None:
    """No key works for the profile until the next rotation; admin keys still reach it.
    Revoking a revoked key changes nothing (and keeps its `key_rotated_at`)."""
    profile = await _writable_profile(session, principal, profile_id)
    if is_revoked(profile):
        return
    _replace_key(session, profile, REVOKED_ID_PREFIX + secrets.token_hex(8), REVOKED_HASH)
    await session.flush()
