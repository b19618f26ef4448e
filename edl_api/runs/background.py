"""Background work owned by the app's lifespan: dispatcher and scheduler."""

from __future__ import annotations

from fastapi import FastAPI


async def start(app: FastAPI) -> None:
    """Start the dispatcher (and the scheduler when EDL_AUTO_REFRESH_MINUTES > 0)."""


async def stop(app: FastAPI) -> None:
    """Stop claiming, end in-flight children within a bound, stop the scheduler."""
