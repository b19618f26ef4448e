"""Operator commands on the secret store: `edl-api migrate-secrets` and
`edl-api rotate-secrets-key` (both idempotent; each prints what it did)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.engine.config import LEGACY_SECRET_REF, SECRET_NAME, ConfigError, load_config
from edl_api.models import (
    ProfileConfig,
    ProfileConfigVersion,
    ProfileSecret,
    Webhook,
    utcnow,
)
from edl_api.secrets.crypto import Keyring, key_file, keyring, read_key_file, write_key_file
from edl_api.settings import Settings


@dataclass
class MigrationReport:
    grants: list[str] = field(default_factory=list)  # "profile 3: X → EDL_SECRET_X"
    configs: list[str] = field(default_factory=list)  # "config 7 (name) v2 → v3"
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            *(f"granted {g}" for g in self.grants),
            *(f"rewrote {c}" for c in self.configs),
            *(f"skipped {p}" for p in self.problems),
        ]


async def migrate_legacy_references(
    maker: async_sessionmaker[AsyncSession], *, dry_run: bool = False
) -> MigrationReport:
    """For every config that references `${EDL_SECRET_X}`: grant its profile `X` →
    `EDL_SECRET_X` (unless the profile already has a secret `X`) and rewrite the config
    to `${secret:X}` as a new version. One transaction: all or nothing."""
    report = MigrationReport()
    async with maker() as session, session.begin():
        configs = (
            await session.execute(
                select(ProfileConfig)
                .where(col(ProfileConfig.yaml).contains("${EDL_SECRET_"))
                .order_by(col(ProfileConfig.id))
            )
        ).scalars().all()
        granted: set[tuple[int, str]] = set()
        for config in configs:
            names = sorted(set(LEGACY_SECRET_REF.findall(config.yaml)))
            bad = [n for n in names if not SECRET_NAME.fullmatch(n)]
            if bad:
                report.problems.append(
                    f"config {config.id} ({config.name}): EDL_SECRET_{bad[0]} has no valid "
                    "secret name (A-Z first, at most 64); rename it by hand"
                )
                continue
            text = LEGACY_SECRET_REF.sub(lambda m: "${secret:" + m.group(1) + "}", config.yaml)
            try:
                load_config(text)
            except ConfigError as exc:
                report.problems.append(f"config {config.id} ({config.name}): {exc}"[:300])
                continue
            for name in names:
                if (config.profile_id, name) not in granted:
                    granted.add((config.profile_id, name))
                    await _grant(session, report, config.profile_id, name, dry_run)
            report.configs.append(
                f"config {config.id} ({config.name}) v{config.version} → v{config.version + 1}"
            )
            if not dry_run:
                config.yaml, config.version, config.updated_at = (
                    text, config.version + 1, utcnow(),
                )
                session.add(ProfileConfigVersion(
                    config_id=config.id or 0, version=config.version, name=config.name,
                    yaml=text, refresh_interval_minutes=config.refresh_interval_minutes,
                    created_at=config.updated_at,
                ))
    return report


async def _grant(
    session: AsyncSession, report: MigrationReport, profile_id: int, name: str, dry_run: bool
) -> None:
    variable = f"EDL_SECRET_{name}"
    existing = (
        await session.execute(
            select(ProfileSecret).where(
                col(ProfileSecret.profile_id) == profile_id, col(ProfileSecret.name) == name
            )
        )
    ).scalar_one_or_none()
    if existing is not None:
        report.grants.append(f"profile {profile_id}: {name} (kept its existing secret)")
        return
    note = "" if variable in os.environ else f" ({variable} is not set here: set it for workers)"
    report.grants.append(f"profile {profile_id}: {name} → {variable}{note}")
    if not dry_run:
        session.add(ProfileSecret(profile_id=profile_id, name=name, from_env=variable))
        await session.flush()


async def rotate_master_key(
    settings: Settings, maker: async_sessionmaker[AsyncSession]
) -> tuple[int, str]:
    """Re-encrypt every stored value under the primary key: (values, what changed).

    EDL_SECRETS_KEY set: the operator put the new key first (`NEW,OLD`); every value is
    re-encrypted under NEW and OLD may then be dropped. Key file: a new key is generated
    and written first in the file (the old one kept after it), values are re-encrypted,
    then the old key is removed; a crash in between leaves a file that opens everything.
    Run it with the service and workers stopped: a process still running would encrypt a
    new value under the key it loaded at start.
    """
    if settings.secrets_key is not None:
        ring = keyring(settings)
        done = await _reencrypt(maker, ring)
        return done, "re-encrypted under the first key of EDL_SECRETS_KEY; drop the others"
    path = key_file(settings)
    old = read_key_file(path) if path.exists() else []
    new = Fernet.generate_key()
    write_key_file(path, [new, *old], replace=True)
    done = await _reencrypt(maker, Keyring([new, *old]))
    write_key_file(path, [new], replace=True)
    return done, f"new key in {path}; older keys removed"


async def _reencrypt(maker: async_sessionmaker[AsyncSession], ring: Keyring) -> int:
    async with maker() as session, session.begin():
        rows = (
            await session.execute(
                select(ProfileSecret).where(col(ProfileSecret.ciphertext).is_not(None))
            )
        ).scalars().all()
        for row in rows:
            row.ciphertext = ring.rotate(row.ciphertext or b"")
        # Webhook signing secrets are encrypted under the same master key (edl_api.alerts).
        hooks = (
            await session.execute(
                select(Webhook).where(col(Webhook.secret_ciphertext).is_not(None))
            )
        ).scalars().all()
        for hook in hooks:
            hook.secret_ciphertext = ring.rotate(hook.secret_ciphertext or b"")
        return len(rows) + len(hooks)
