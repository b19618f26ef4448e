"""The indicator store follows every published feed, whatever the pipeline's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.feeds.conftest import make_tenant, prepare_run, publish_prepared
from tests.helpers import expect, h

FEEDS = {
    "ipv4": ["192.0.2.1", "198.51.100.7"],
    "ipv6": ["2001:db8::1"],
    "cidr": ["203.0.113.0/24"],
}


async def test_ip_outputs_update_the_store_on_every_run(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Outputs [ipv4, ipv6, cidr, ip]: the second run (the first with a provenance
    baseline) failed with `indicator store not updated: KeyError: 'fqdn'`."""
    t = await make_tenant(client, "a")
    for extra in ([], ["192.0.2.99"]):
        feeds = {**FEEDS, "ipv4": FEEDS["ipv4"] + extra}
        feeds["ip"] = [v for kind in ("ipv4", "ipv6", "cidr") for v in feeds[kind]]
        run_id, out_dir, snapshot = await prepare_run(app, tmp_path, t.pipeline_id, feeds)
        outcome = await publish_prepared(app, run_id, out_dir, snapshot)
        assert outcome.errors == [], outcome.errors
    # search follows the second run too
    found = await expect(await client.get(
        f"/profiles/{t.profile_id}/pipelines/search", params={"indicator": "192.0.2.99"},
        headers=h(t.key),
    ))
    assert [match["run_id"] for match in found["matches"]] == [run_id]
