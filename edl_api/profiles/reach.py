"""A profile's reach: its folder for `path:` sources and the private destinations a
super-admin granted it (the run layer loads both for each run: `runs/reach.py`)."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy.ext.asyncio import AsyncSession

from edl_api.auth.principal import Principal
from edl_api.engine.indicators import cidr_ok
from edl_api.errors import Forbidden, Unprocessable
from edl_api.profiles import folder as profile_folders
from edl_api.profiles.schemas import ProfileDetail, ProfilePatch, ProfilePublic
from edl_api.profiles.service import get_profile
from edl_api.settings import Settings


async def profile_detail(
    session: AsyncSession, principal: Principal, settings: Settings, profile_id: int
) -> ProfileDetail:
    """The profile and its source folder (made here on first look, so an operator knows
    where to put its files)."""
    profile = await get_profile(session, principal, profile_id)

    def look() -> tuple[str | None, list[str], bool]:
        folder = profile_folders.profile_folder(settings, profile_id, create=True)
        if folder is None:
            return None, [], False
        return str(folder), *profile_folders.list_files(folder)

    source_dir, files, truncated = await asyncio.to_thread(look)
    return ProfileDetail(
        **ProfilePublic.model_validate(profile).model_dump(),
        source_dir=source_dir, source_files=files, source_files_truncated=truncated,
    )


def _check_cidrs(cidrs: list[str]) -> list[str]:
    out = []
    for index, cidr in enumerate(cidrs):
        if cidr_ok(cidr.strip()) is None:
            raise Unprocessable(
                [{"loc": ["body", "ssrf_allow_cidrs", index], "type": "value_error",
                  "msg": "not an IPv4/IPv6 network (e.g. 10.20.0.0/16)"}],
                code="validation_error",
            )
        out.append(cidr.strip())
    return list(dict.fromkeys(out))


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _check_hosts(hosts: list[str]) -> list[str]:
    out = []
    for index, host in enumerate(hosts):
        name = host.strip().lower().rstrip(".")
        labels = name.split(".")
        if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in labels):
            raise Unprocessable(
                [{"loc": ["body", "ssrf_allow_hosts", index], "type": "value_error",
                  "msg": "not a host name (letters, digits, '-' and '.'; no wildcards)"}],
                code="validation_error",
            )
        out.append(name)
    return list(dict.fromkeys(out))


async def patch_profile(
    session: AsyncSession, principal: Principal, settings: Settings, profile_id: int,
    body: ProfilePatch,
) -> ProfileDetail:
    """Super-admin only: the profile's own SSRF grants (its runs get them on top of the
    global EDL_SSRF_ALLOW_*)."""
    profile = await get_profile(session, principal, profile_id)  # 404 outside the scope
    if not principal.is_super_admin:
        raise Forbidden("only a super-admin may change a profile's private destinations")
    changes = body.model_dump(exclude_unset=True)
    if not changes or any(value is None for value in changes.values()):
        raise Unprocessable("give ssrf_allow_cidrs and/or ssrf_allow_hosts (lists)",
                            code="validation_error")
    if "ssrf_allow_cidrs" in changes:
        profile.ssrf_allow_cidrs = _check_cidrs(changes["ssrf_allow_cidrs"])
    if "ssrf_allow_hosts" in changes:
        profile.ssrf_allow_hosts = _check_hosts(changes["ssrf_allow_hosts"])
    session.add(profile)
    await session.flush()
    return await profile_detail(session, principal, settings, profile_id)
