"""Run logs in the database: gzip chunks every process and host can read.

`ChunkWriter` buffers a run's sanitised lines and appends them as `run_log_chunks` rows
(seq 0, 1, …) at most every FLUSH_SECONDS or CHUNK_BYTES, whichever comes first, from one
background task per run, so chunks land in order and no caller waits on the database for
an engine line. `flush(wait=…)` lets the dispatcher's own notes land before it commits a
state (a reader who sees the final state sees the notes) while bounding that wait: a
failed or slow write never blocks a state transition. Failures are counted
(`edl_run_log_write_failures_total{target="db"}`), warned once per run, and the chunk is
retried a few times while memory allows, then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.models import RunLogChunk

logger = logging.getLogger("edl_api.runs")

FLUSH_SECONDS = 1.0
CHUNK_BYTES = 64 * 1024
# Uncompressed bytes of one run kept in the database; past it lines are counted, not kept.
RUN_MAX_BYTES = 64 * 1024 * 1024
# Chunks waiting for a database that failed: past this, the oldest are dropped.
PENDING_MAX_BYTES = 4 * 1024 * 1024
NOTE_WAIT_SECONDS = 2.0
CLOSE_WAIT_SECONDS = 5.0

# Final flushes of logs closed without awaiting (a sync `close()`): kept so they finish.
_closing: set[asyncio.Task[None]] = set()


class ChunkWriter:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], run_id: int,
        on_failure: Callable[[str, BaseException], None],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.run_id = run_id
        self._on_failure = on_failure
        self._buffer: list[str] = []
        self._buffer_bytes = 0
        self._pending: deque[tuple[bytes, int, int]] = deque()  # (gzip, lines, raw bytes)
        self._pending_bytes = 0
        self._stored_bytes = 0
        self._dropped_lines = 0
        self._next_seq: int | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def append(self, line: str) -> None:
        size = len(line.encode("utf-8")) + 1
        if self._closed or self._stored_bytes + self._buffer_bytes + size > RUN_MAX_BYTES:
            self._dropped_lines += 1
            return
        self._buffer.append(line)
        self._buffer_bytes += size
        if self._buffer_bytes >= CHUNK_BYTES:
            self._cut()
            self._wake.set()
        self._ensure_task()

    async def flush(self, wait: float = NOTE_WAIT_SECONDS) -> bool:
        """Hand everything buffered to the writer; wait up to `wait` s for it to land."""
        self._cut()
        if not self._pending:
            return True
        self._ensure_task()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._idle.wait()
        return not self._pending

    async def aclose(self, wait: float = CLOSE_WAIT_SECONDS) -> None:
        if self._dropped_lines and not self._closed:
            self._buffer.append(f"…[{self._dropped_lines} line(s) past the run log's "
                                f"{RUN_MAX_BYTES // (1024 * 1024)} MiB not kept]")
        self._closed = True
        await self.flush(wait)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def close(self) -> None:
        """Sync close: the last flush goes on in the background (the loop keeps it)."""
        if self._closed:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.aclose())
        except RuntimeError:  # no loop: nothing more can be written
            self._closed = True
            return
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    # ------------------------------------------------------------------ internals

    def _cut(self) -> None:
        if not self._buffer:
            return
        raw = ("\n".join(self._buffer) + "\n").encode("utf-8")
        self._pending.append((gzip.compress(raw, compresslevel=6), len(self._buffer), len(raw)))
        self._pending_bytes += len(raw)
        self._stored_bytes += len(raw)
        self._buffer, self._buffer_bytes = [], 0
        self._idle.clear()
        while self._pending_bytes > PENDING_MAX_BYTES and len(self._pending) > 1:
            _, lines, size = self._pending.popleft()
            self._pending_bytes -= size
            self._dropped_lines += lines

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"run-{self.run_id}-log"
            )

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            self._cut()
            while self._pending:
                try:
                    await self._write(*self._pending[0][:2])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._on_failure("db", exc)
                    self._idle.set()  # a waiting note gives up now; we retry next tick
                    break
                _, _, size = self._pending.popleft()
                self._pending_bytes -= size
            if not self._pending:
                self._idle.set()

    async def _write(self, content: bytes, lines: int) -> None:
        async with self.sessionmaker() as session:
            if self._next_seq is None:
                self._next_seq = await next_seq(session, self.run_id)
            session.add(RunLogChunk(run_id=self.run_id, seq=self._next_seq, lines=lines,
                                    content_gzip=content))
            try:
                await session.commit()
            except IntegrityError:
                # Another process appended to this run's log (recovery's note): go after it.
                self._next_seq = None
                raise
        self._next_seq += 1


async def next_seq(session: AsyncSession, run_id: int) -> int:
    last = await session.execute(
        select(func.max(col(RunLogChunk.seq))).where(col(RunLogChunk.run_id) == run_id)
    )
    value = last.scalar_one_or_none()
    return 0 if value is None else int(value) + 1


# --------------------------------------------------------------------------- reading


def _inflate(chunks: list[bytes]) -> bytes:
    return b"".join(gzip.decompress(c) for c in chunks)


async def has_chunks(session: AsyncSession, run_id: int) -> bool:
    found = await session.execute(
        select(col(RunLogChunk.id)).where(col(RunLogChunk.run_id) == run_id).limit(1)
    )
    return found.first() is not None


async def read_all(session: AsyncSession, run_id: int) -> tuple[bytes, int]:
    """The whole log and the next seq to read from."""
    rows = (
        await session.execute(
            select(col(RunLogChunk.seq), col(RunLogChunk.content_gzip))
            .where(col(RunLogChunk.run_id) == run_id).order_by(col(RunLogChunk.seq))
        )
    ).all()
    data = await asyncio.to_thread(_inflate, [bytes(r[1]) for r in rows])
    return data, (int(rows[-1][0]) + 1 if rows else 0)


async def read_tail(session: AsyncSession, run_id: int, lines: int) -> tuple[bytes, int]:
    """The last `lines` lines (only the chunks they need) and the next seq to read from."""
    meta = (
        await session.execute(
            select(col(RunLogChunk.seq), col(RunLogChunk.lines))
            .where(col(RunLogChunk.run_id) == run_id).order_by(col(RunLogChunk.seq).desc())
        )
    ).all()
    if not meta:
        return b"", 0
    after = int(meta[0][0]) + 1
    if lines <= 0:
        return b"", after
    needed, first = 0, int(meta[-1][0])
    for seq, count in meta:
        needed += int(count)
        if needed >= lines:
            first = int(seq)
            break
    rows = (
        await session.execute(
            select(col(RunLogChunk.content_gzip))
            .where(col(RunLogChunk.run_id) == run_id, col(RunLogChunk.seq) >= first)
            .order_by(col(RunLogChunk.seq))
        )
    ).scalars().all()
    data = await asyncio.to_thread(_inflate, [bytes(r) for r in rows])
    kept: deque[bytes] = deque(data.splitlines(keepends=True), maxlen=lines)
    return b"".join(kept), after


async def follow(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int,
    is_running: Callable[[], Awaitable[bool]], start: bytes, after: int,
    poll_seconds: float = 0.3,
) -> AsyncIterator[bytes]:
    """Yield `start`, then every chunk appended from seq `after` on, until the run ends."""
    if start:
        yield start
    finished = False
    while True:
        async with sessionmaker() as session:
            rows = (
                await session.execute(
                    select(col(RunLogChunk.seq), col(RunLogChunk.content_gzip))
                    .where(col(RunLogChunk.run_id) == run_id, col(RunLogChunk.seq) >= after)
                    .order_by(col(RunLogChunk.seq)).limit(64)
                )
            ).all()
        if rows:
            after = int(rows[-1][0]) + 1
            yield await asyncio.to_thread(_inflate, [bytes(r[1]) for r in rows])
            if len(rows) == 64:
                continue  # more waiting: no sleep
        if finished:
            return
        if not await is_running():
            finished = True  # one more pass picks up the last chunks
            continue
        await asyncio.sleep(poll_seconds)
