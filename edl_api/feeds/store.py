"""Publishing (atomic, guarded) and the in-memory feed cache."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from edl_api.models import PipelineRun


def install(app: FastAPI) -> None:
    """Attach the per-process feed cache to app.state."""


async def publish_run(session: AsyncSession, run: PipelineRun, out_dir: Path) -> None:
    """Store a finished run's artifacts from the engine's out_dir and publish them."""
    raise NotImplementedError
