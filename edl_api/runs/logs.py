"""Run logs: one file per run under EDL_LOG_DIR/runs/, rotated into gzip segments.

Layout for run 42: `run-42.log` (the live segment) and `run-42.log.1.gz`,
`run-42.log.2.gz`, … (older segments, 1 is the oldest). Every line that reaches a
log went through `Sanitiser`: control characters dropped, secrets redacted, length
capped. `engine.log` collects the same lines across runs, prefixed with the run id.

Given a sessionmaker, a RunLog also appends every line to the database
(`logstore.ChunkWriter`): that copy is what `GET /runs/{id}/logs` reads, from any host;
the files are this host's copy. A write that fails (file or database) is counted in
`edl_run_log_write_failures_total`, warned once per run and target, and skipped: no
caller, and no state transition, fails because of a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import logging.handlers
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TextIO

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edl_api import metrics
from edl_api.logging_setup import RedactingFilter
from edl_api.runs.logstore import ChunkWriter
from edl_api.settings import Settings

# The live segment is rotated into a gzip segment when it grows past this size.
RUN_LOG_MAX_BYTES = 4 * 1024 * 1024
MAX_LINE_CHARS = 4000
ENGINE_LOG_MAX_BYTES = 20 * 1024 * 1024

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SEGMENT_RE = re.compile(r"\.log\.(\d+)\.gz$")
ENGINE_LOGGER = "edl.engine_output"
logger = logging.getLogger("edl_api.runs")


class Sanitiser:
    """Makes upstream bytes safe for a log: printable, single-line, secret-free."""

    def __init__(self, settings: Settings) -> None:
        secrets = [secret for secret, _ in settings.legacy_keys()]
        secrets += [v for k, v in os.environ.items() if k.startswith("EDL_SECRET_") and v]
        self._redactor = RedactingFilter(secrets)

    def line(self, raw: bytes | str) -> str:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = text.rstrip("\r\n").replace("\t", " ")
        text = _CONTROL_RE.sub("?", text)
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " …[truncated]"
        return self._redactor.redact(text)


def runs_dir(settings: Settings) -> Path:
    return settings.log_dir / "runs"


def live_path(settings: Settings, run_id: int) -> Path:
    return runs_dir(settings) / f"run-{run_id}.log"


def segments(settings: Settings, run_id: int) -> list[Path]:
    """The gzip segments of a run's log, oldest first."""
    folder = runs_dir(settings)
    if not folder.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for path in folder.glob(f"run-{run_id}.log.*.gz"):
        match = _SEGMENT_RE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def _gzip_file(source: Path, target: Path) -> None:
    tmp = target.with_suffix(".tmp")
    with source.open("rb") as raw, gzip.open(tmp, "wb", compresslevel=6) as packed:
        while chunk := raw.read(1024 * 1024):
            packed.write(chunk)
    tmp.replace(target)
    source.unlink()


class RunLog:
    """Appends sanitised lines to one run's log (file rotated at `max_bytes`, and the
    database when given a sessionmaker); never raises for a failed write."""

    def __init__(
        self, settings: Settings, run_id: int, max_bytes: int | None = None,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.max_bytes = max_bytes or RUN_LOG_MAX_BYTES
        self.path = live_path(settings, run_id)
        self._warned: set[str] = set()
        self._engine_log = logging.getLogger(ENGINE_LOGGER)
        self._store = (
            ChunkWriter(sessionmaker, run_id, self._failed) if sessionmaker is not None else None
        )
        self._file: TextIO | None = None
        self._size = 0
        self._next_segment = 1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existing = segments(settings, run_id)
            if existing:
                match = _SEGMENT_RE.search(existing[-1].name)
                self._next_segment = int(match.group(1)) + 1 if match else 1
            self._file = self.path.open("a", encoding="utf-8")
            self._size = self.path.stat().st_size
        except OSError as exc:
            self._failed("file", exc)

    def _failed(self, target: str, exc: BaseException) -> None:
        """Count a skipped write; warn once per run and target (not once per line)."""
        metrics.RUN_LOG_WRITE_FAILURES.labels(target).inc()
        if target == "file":
            self._close_file()  # one failure means the folder is unusable for this run
        if target not in self._warned:
            self._warned.add(target)
            where = self.path if target == "file" else "the database"
            logger.warning("run %s: log writes to %s fail, skipping them: %s",
                           self.run_id, where, f"{type(exc).__name__}: {exc}"[:300])

    async def write(self, line: str, *, to_engine_log: bool = True) -> None:
        if self._store is not None:
            self._store.append(line)
        if to_engine_log:
            self._engine_log.info("run %s: %s", self.run_id, line)
        if self._file is None:
            return
        data = line + "\n"
        try:
            self._file.write(data)
        except OSError as exc:
            self._failed("file", exc)
            return
        self._size += len(data.encode("utf-8"))
        if self._size >= self.max_bytes:
            await self.rotate()

    async def note(self, message: str) -> None:
        """A line of our own, stamped like the engine's lines. Readers (logs API, follow)
        see it at once: it waits for the database, but only NOTE_WAIT_SECONDS at most."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await self.write(f"{stamp} dispatcher: {message}")
        self.flush()
        if self._store is not None:
            await self._store.flush()

    async def rotate(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        target = self.path.with_name(f"{self.path.name}.{self._next_segment}.gz")
        self._next_segment += 1
        try:
            # gzip off the event loop: a 4 MiB segment takes tens of milliseconds.
            await asyncio.to_thread(_gzip_file, self.path, target)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            self._failed("file", exc)
        self._size = 0

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self._failed("file", exc)

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None and not file.closed:
            with contextlib.suppress(OSError):
                file.close()

    def close(self) -> None:
        """Close the file; the database copy's last lines land in the background."""
        self._close_file()
        if self._store is not None:
            self._store.close()

    async def aclose(self) -> None:
        """Close, waiting (bounded) for the database copy's last lines."""
        self._close_file()
        if self._store is not None:
            await self._store.aclose()


def configure_engine_log(settings: Settings) -> None:
    """engine.log: every run's engine output, rotated, not mixed into api.log."""
    logger = logging.getLogger(ENGINE_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        settings.log_dir / "engine.log", maxBytes=ENGINE_LOG_MAX_BYTES, backupCount=5,
        encoding="utf-8",
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def close_engine_log() -> None:
    logger = logging.getLogger(ENGINE_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


# --------------------------------------------------------------------------- reading


def _read_segment(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as packed:
            return packed.read()
    except FileNotFoundError:
        return b""


def _read_live(path: Path, offset: int = 0) -> bytes:
    try:
        with path.open("rb") as raw:
            raw.seek(offset)
            return raw.read()
    except FileNotFoundError:
        return b""


def read_all(settings: Settings, run_id: int) -> bytes:
    """Every segment in order, then the live file."""
    parts = [_read_segment(p) for p in segments(settings, run_id)]
    parts.append(_read_live(live_path(settings, run_id)))
    return b"".join(parts)


def read_tail(settings: Settings, run_id: int, lines: int) -> bytes:
    """The last `lines` lines, reading older segments only as far back as needed."""
    if lines <= 0:
        return b""
    kept: deque[bytes] = deque(maxlen=lines)
    chunks: list[bytes] = [_read_live(live_path(settings, run_id))]
    older = segments(settings, run_id)
    while True:
        text = b"".join(chunks)
        if text.count(b"\n") >= lines + 1 or not older:
            break
        chunks.insert(0, _read_segment(older.pop()))
    kept.extend(text.splitlines(keepends=True))
    return b"".join(kept)


async def follow(
    settings: Settings, run_id: int, is_running: Callable[[], Awaitable[bool]],
    start: bytes, poll_seconds: float = 0.3,
) -> AsyncIterator[bytes]:
    """Yield `start`, then whatever is appended, across rotations, until the run ends."""
    if start:
        yield start
    seen_segments = len(segments(settings, run_id))
    offset = live_path(settings, run_id).stat().st_size if live_path(
        settings, run_id).exists() else 0
    finished = False
    while True:
        current = segments(settings, run_id)
        if len(current) > seen_segments:
            # The live file we were reading became a segment: finish it, then the new ones.
            for index, path in enumerate(current[seen_segments:]):
                data = await asyncio.to_thread(_read_segment, path)
                chunk = data[offset:] if index == 0 else data
                if chunk:
                    yield chunk
                offset = 0
            seen_segments = len(current)
        data = await asyncio.to_thread(_read_live, live_path(settings, run_id), offset)
        # Only whole lines: a partially written line waits for the next poll.
        cut = data.rfind(b"\n") + 1
        if cut:
            offset += cut
            yield data[:cut]
        if finished:
            return
        if not await is_running():
            finished = True  # one more pass picks up the last lines
            continue
        await asyncio.sleep(poll_seconds)
