from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.feeds.publish import PublishOutcome
from edl_api.settings import Settings
from tests.conftest import asgi_client, make_settings, running_app
from tests.helpers import upstream


@pytest.fixture(scope="session")
def upstream_port() -> Iterator[int]:
    with upstream() as port:
        yield port


@pytest.fixture
def run_settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(
        tmp_path, database_url, ssrf_allow_cidrs="127.0.0.0/8",
        max_concurrent_runs_total=3, max_concurrent_runs_per_profile=2,
    )


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records publish calls instead of publishing (the feed layer tests that)."""
    calls: list[int] = []

    async def fake_publish(_maker: Any, run_id: int, out_dir: Path, **_: Any) -> PublishOutcome:
        assert (out_dir / "report.json").exists()
        calls.append(run_id)
        return PublishOutcome()

    monkeypatch.setattr("edl_api.runs.dispatcher.publish", fake_publish)
    return calls


@pytest.fixture
async def run_app(run_settings: Settings, published: list[int]) -> AsyncIterator[Any]:
    async with running_app(run_settings) as application:
        yield application


@pytest.fixture
async def rc(run_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(run_app) as http:
        yield http
