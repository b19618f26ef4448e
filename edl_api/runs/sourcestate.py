"""Per-source state between runs: loaded for a run's engine child, saved from its output.

The engine owns what a state means (`engine.stateful`: a TAXII cursor and objects, MISP
event timestamps, first_seen of entries for `max_age_days`); this module only keeps it,
one `source_states` row per (pipeline, source), the JSON gzip-compressed. A run reads its
own pipeline's rows only; only a full, persisted run whose engine succeeded writes them
(a dry run or a failed run never moves a cursor).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from edl_api.models import PipelineRun, SourceState, utcnow

logger = logging.getLogger("edl_api.runs")

STATE_FILE = "state.json"  # engine.__main__.STATE_FILE: what `run --state` reads and writes
MAX_STATE_BYTES = 256 * 1024 * 1024  # a state.json beyond this is not kept (logged)


def _decode(data: bytes) -> Any:
    return json.loads(gzip.decompress(data).decode("utf-8"))


async def load(session: AsyncSession, pipeline_id: int) -> dict[str, dict[str, Any]]:
    """Source name -> {key, data} of one pipeline (a row that cannot be read is skipped:
    that source starts afresh, which is what a missing state means)."""
    rows = (await session.execute(
        select(SourceState).where(col(SourceState.pipeline_id) == pipeline_id)
    )).scalars().all()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            data = await asyncio.to_thread(_decode, row.data_gzip)
        except (OSError, ValueError, EOFError):
            logger.warning("pipeline %s: state of source %s unreadable; starting afresh",
                           pipeline_id, row.source)
            continue
        out[row.source] = {"key": row.key, "data": data}
    return out


def write_file(path: Path, state: dict[str, dict[str, Any]]) -> None:
    """The child's `--state` file: tenant data, readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(state, handle, separators=(",", ":"))


def _read(out_dir: Path) -> dict[str, tuple[str, bytes]] | None:
    """The engine's out/state.json as {source: (key, gzip data)}; None when there is none."""
    path = out_dir / STATE_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_STATE_BYTES:
        raise ValueError(f"state.json is over {MAX_STATE_BYTES} bytes")
    state = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(state, dict):
        raise ValueError("state.json is not an object")
    out = {}
    for source, entry in state.items():
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            text = json.dumps(entry.get("data"), separators=(",", ":"))
            out[str(source)[:64]] = (entry["key"][:64],
                                     gzip.compress(text.encode(), compresslevel=6, mtime=0))
    return out


async def save(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int, out_dir: Path
) -> None:
    """Store a succeeded run's out/state.json as its pipeline's source states: upsert each
    source, delete the rows of sources it no longer has. Never raises: a state that is not
    kept only makes the next run pull in full."""
    try:
        state = await asyncio.to_thread(_read, out_dir)
        if state is None:
            return
        async with sessionmaker() as session, session.begin():
            run = await session.get(PipelineRun, run_id)
            if run is None:
                return
            rows = {
                row.source: row for row in (await session.execute(
                    select(SourceState).where(col(SourceState.pipeline_id) == run.pipeline_id)
                )).scalars()
            }
            now = utcnow()
            for source, (key, data) in state.items():
                row = rows.get(source)
                if row is None:
                    session.add(SourceState(pipeline_id=run.pipeline_id, source=source,
                                            key=key, data_gzip=data, run_id=run_id,
                                            updated_at=now))
                elif row.run_id <= run_id:  # a later run's state is never overwritten
                    row.key, row.data_gzip, row.run_id, row.updated_at = key, data, run_id, now
            gone = [s for s, row in rows.items() if s not in state and row.run_id <= run_id]
            if gone:
                await session.execute(
                    delete(SourceState).where(col(SourceState.pipeline_id) == run.pipeline_id,
                                              col(SourceState.source).in_(gone))
                )
    except Exception:
        logger.exception("run %s: source state not stored", run_id)
