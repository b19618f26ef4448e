"""Source errors say what to do: a DNS failure names the host and the resolver's error, an
SSRF refusal names the settings and the per-profile grant; `check-config` warns of private
destinations offline. An injected resolver: no real DNS."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from edl_api.engine.config import validate_config_document
from edl_api.engine.destinations import private_destinations
from edl_api.engine.pipeline import EngineSettings, run_pipeline


async def _resolver(host: str, port: int) -> list[str]:
    if host == "gone.example":
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return ["10.0.0.5"]  # every other name is an intranet host


def _errors(url: str) -> list[str]:
    config = validate_config_document(
        {"sources": [{"name": "s", "url": url}], "pipeline": {"outputs": ["ip"]}}
    )
    result = asyncio.run(run_pipeline(config, EngineSettings(resolver=_resolver)))
    return list(result.errors)


def test_dns_failure_names_host_and_resolver_error() -> None:
    (error,) = _errors("https://gone.example/list.txt")
    assert "cannot resolve host gone.example" in error
    assert "gaierror" in error
    assert "Name or service not known" in error


def test_ssrf_refusal_names_the_settings_and_the_grant() -> None:
    (error,) = _errors("https://intranet.example/list.txt")
    assert "refused: host resolves to a non-global address (intranet.example)" in error
    assert "EDL_SSRF_ALLOW_CIDRS" in error
    assert "EDL_SSRF_ALLOW_HOSTS" in error
    assert "PATCH /profiles/{id}" in error
    assert "10.0.0.5" not in error  # what the intranet name resolves to stays unsaid


CONFIG = """\
sources:
  - name: intranet
    url: http://10.1.2.3/list.txt
  - name: nas
    url: https://nas.local/feed.txt
  - name: public
    url: https://feeds.example.org/list.txt
  - name: granted
    url: http://192.168.7.7/list.txt
"""


def test_private_destinations_offline() -> None:
    config = validate_config_document(yaml.safe_load(CONFIG))
    warnings = private_destinations(config, ["192.168.0.0/16"], [])
    assert [w.split(":")[0] for w in warnings] == ["source intranet", "source nas"]
    assert all("EDL_SSRF_ALLOW_CIDRS" in w for w in warnings)
    assert private_destinations(config, ["0.0.0.0/0"], ["nas.local"]) == []


def test_check_config_warns_but_passes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "edl_api", "check-config", str(path)], cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "EDL_SSRF_ALLOW_CIDRS": "192.168.0.0/16"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("ok (4 sources, outputs: ipv4, ipv6, cidr, fqdn, url, ip)")
    warned = [line for line in lines if ": warning: " in line]
    assert len(warned) == 2
    assert "source intranet: 10.1.2.3 is a non-global address" in warned[0]
    assert "source nas: nas.local is a local name" in warned[1]
