"""The tenant-isolation suite's ground: a real `edl-api serve` (SQLite, its own folder),
two tenants A and B made through the API, and a loopback upstream that records every
request and header it receives (it must never see one tenant's secret in another's run).

Each attack test plays one issue-#12 attack through HTTP, as a holder of one tenant's
profile key would, and asserts it is refused with a clear 4xx, never a 5xx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SUPER_KEY
from tests.helpers import FINISHED, LoopbackServer, h, loopback, running_server, service_env

# A secret of the service's environment that no tenant was granted.
ENV_SECRET_NAME = "EDL_SECRET_ACME_TOKEN"
ENV_SECRET_VALUE = "acme-env-secret-value-7f3a"


@dataclass
class LiveTenant:
    profile_id: int
    key: str


@dataclass
class Live:
    """A running service and what the attacks need of it."""

    base: str
    folder: Path
    upstream: LoopbackServer
    a: LiveTenant
    b: LiveTenant
    client: httpx.Client = field(repr=False)

    def headers_seen(self) -> list[dict[str, str]]:
        return [headers for _, headers in self.upstream.requests]

    def pipeline(self, tenant: LiveTenant, yaml: str, name: str = "p") -> int:
        """A config and a pipeline of `tenant`, made with its own key: the pipeline id."""
        config = self.client.post(
            f"/profiles/{tenant.profile_id}/configs", json={"name": name, "yaml": yaml},
            headers=h(tenant.key),
        )
        assert config.status_code == 201, config.text
        pipeline = self.client.post(
            "/pipelines", json={"profile_config_id": config.json()["id"], "name": name},
            headers=h(tenant.key),
        )
        assert pipeline.status_code == 201, pipeline.text
        return int(pipeline.json()["id"])

    def run(self, tenant: LiveTenant, pipeline_id: int, timeout: float = 60,
            **body: Any) -> dict[str, Any]:
        """Launch a run with `tenant`'s key and wait for its final state."""
        started = self.client.post(
            "/runs", json={"pipeline_id": pipeline_id, **body}, headers=h(tenant.key)
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        deadline = time.monotonic() + timeout
        while True:
            run = self.client.get(f"/runs/{run_id}", headers=h(tenant.key)).json()
            if run["state"] in FINISHED:
                return dict(run)
            assert time.monotonic() < deadline, f"run {run_id} still {run['state']}"
            time.sleep(0.2)


def _tenant(client: httpx.Client, name: str) -> LiveTenant:
    created = client.post("/profiles", json={"name": name}, headers=h(SUPER_KEY))
    assert created.status_code == 201, created.text
    return LiveTenant(created.json()["profile"]["id"], created.json()["api_key"])


def start_live(tmp_path: Path, **env: str) -> Iterator[Live]:
    """Start the service with `env` added (EDL_* settings) and yield a `Live` with two
    fresh tenants; everything started is stopped on exit."""
    folder = tmp_path / "svc"
    (folder / "sources").mkdir(parents=True, exist_ok=True)
    values = service_env(
        folder, EDL_API_KEY=SUPER_KEY, EDL_SOURCE_DIR=str(folder / "sources"),
        EDL_AUTO_REFRESH_MINUTES="0",
    ) | {ENV_SECRET_NAME: ENV_SECRET_VALUE} | env
    with loopback() as upstream, running_server(values, folder, log=folder / "serve.out") as (
        _, base
    ), httpx.Client(base_url=base, timeout=30) as client:
        yield Live(base, folder, upstream, _tenant(client, "a"), _tenant(client, "b"), client)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """The service with loopback upstreams allowed for every tenant (the global grant of a
    single-tenant install), so attacks reach the recorder."""
    yield from start_live(tmp_path, EDL_SSRF_ALLOW_CIDRS="127.0.0.0/8")
