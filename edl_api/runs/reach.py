"""What one run may reach, loaded in the run layer when the run starts.

- secrets: exactly the `${secret:NAME}` its config snapshot references, from the run's own
  profile, decrypted here (never in the child, which has no key and no database);
- SSRF grants: the global `EDL_SSRF_ALLOW_*` (every tenant) ∪ its profile's own;
- files: its profile's folder `EDL_SOURCE_DIR/<profile_id>/`.

Anything that cannot be honoured (a legacy `${EDL_SECRET_X}`, a deleted secret, a granted
variable missing from this worker's environment) fails the run with a clear reason
before its engine starts; the reason names secrets, never their values.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from edl_api.engine.config import LEGACY_SECRET_REF, MIGRATE_HINT, ConfigError, load_config
from edl_api.models import Profile, ProfileSecret
from edl_api.profiles.folder import profile_folder
from edl_api.secrets.crypto import SecretsKeyError, keyring
from edl_api.settings import Settings


class ReachError(Exception):
    """The run cannot start as configured; the message is safe to record and log."""


@dataclass(frozen=True)
class RunReach:
    ssrf_allow_cidrs: tuple[str, ...] = ()
    ssrf_allow_hosts: tuple[str, ...] = ()
    source_dir: str | None = None
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


def _union(*parts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for part in parts for item in part))


async def load_reach(
    session: AsyncSession, settings: Settings, profile_id: int, snapshot: str
) -> RunReach:
    legacy = sorted(set(LEGACY_SECRET_REF.findall(snapshot)))
    if legacy:
        name = legacy[0]
        raise ReachError(
            f"the config uses ${{EDL_SECRET_{name}}}, which no longer reaches the "
            "environment; " + MIGRATE_HINT % (name, name)
        )
    try:
        config = await asyncio.to_thread(load_config, snapshot)
    except ConfigError as exc:
        raise ReachError(f"invalid config: {str(exc)[:500]}") from None
    profile = await session.get(Profile, profile_id)
    if profile is None:
        raise ReachError("the run's profile no longer exists")
    refs = config.secret_references()
    secrets = await _secrets(session, settings, profile_id, refs) if refs else {}
    uses_files = any(source.path is not None for source in config.sources)
    folder = profile_folder(settings, profile_id, create=uses_files)
    return RunReach(
        ssrf_allow_cidrs=_union(settings.ssrf_allow_cidrs, profile.ssrf_allow_cidrs or []),
        ssrf_allow_hosts=_union(settings.ssrf_allow_hosts, profile.ssrf_allow_hosts or []),
        source_dir=None if folder is None else str(folder),
        secrets=secrets,
    )


async def _secrets(
    session: AsyncSession, settings: Settings, profile_id: int, refs: Mapping[str, list[str]]
) -> dict[str, str]:
    rows = {
        row.name: row
        for row in (
            await session.execute(
                select(ProfileSecret).where(
                    col(ProfileSecret.profile_id) == profile_id,
                    col(ProfileSecret.name).in_(list(refs)),
                )
            )
        ).scalars()
    }
    values: dict[str, str] = {}
    for name, fields in refs.items():
        row = rows.get(name)
        if row is None:
            raise ReachError(
                f"secret {name} is not set for this profile (used by {fields[0]})"
            )
        if row.from_env is not None:
            value = os.environ.get(row.from_env)
            if value is None:
                raise ReachError(
                    f"secret {name}: {row.from_env} is not set in this worker's environment"
                )
        else:
            try:
                value = keyring(settings).decrypt(row.ciphertext or b"")
            except SecretsKeyError as exc:
                raise ReachError(f"secret {name}: {exc}") from None
        values[name] = value
    return values
