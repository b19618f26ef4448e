"""One `serve`/`worker` process per SQLite database.

SQLite has one writer at a time and no way to tell processes apart, so two processes on
one file (two `serve`, or `serve` + `worker`) contend for its lock and each believes it
owns the queue. `acquire` takes an exclusive `flock` on `<database>.lock` (holding the
pid) for the life of the process; the kernel drops it when the process exits, however it
exits, so a kill -9 leaves no stale lock. PostgreSQL needs none: run as many as you like.
`migrate`, `create-admin` and the secrets commands take no lock (a migration while
serving is the same as the one `serve` applies at start; stop the service first to be
sure nothing writes meanwhile).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from edl_api.settings import Settings


class InstanceLocked(RuntimeError):
    """Another process holds this SQLite database."""


def lock_path(settings: Settings) -> Path | None:
    """`<database file>.lock`, or None when no lock is needed (PostgreSQL, in-memory)."""
    if not settings.is_sqlite:
        return None
    database = make_url(settings.resolved_database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().with_name(Path(database).name + ".lock")


class InstanceLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def acquire(settings: Settings, command: str) -> InstanceLock | None:
    """Hold the database's lock until the process ends, or raise InstanceLocked."""
    path = lock_path(settings)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        raise InstanceLocked(
            f"{command}: the SQLite database {path.with_suffix('')} is in use by another "
            f"edl-api process ({holder}; lock {path}). SQLite allows one serve or worker "
            "process per database: stop that one, or use PostgreSQL (EDL_DATABASE_URL="
            "postgresql+asyncpg://…) to run several processes or hosts"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    return InstanceLock(path, fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if not text:
        return "pid unknown"
    return f"pid {text[0]}" + (f", edl-api {text[1]}" if len(text) > 1 else "")
