"""deploy/nginx-edl.conf in front of a real `edl-api serve`: TLS, proxying, the
per-client budget. Skipped where nginx or openssl is not installed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SUPER_KEY
from tests.helpers import free_port, h, running_server, service_env

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="nginx and openssl are needed to run the deploy config",
)


def _site(tmp_path: Path, port: int, api_port: str) -> Path:
    ssl = tmp_path / "ssl"
    ssl.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=edl.example.com", "-keyout", str(ssl / "privkey.pem"),
         "-out", str(ssl / "fullchain.pem")],
        check=True, capture_output=True, timeout=60,
    )
    site = (ROOT / "deploy" / "nginx-edl.conf").read_text()
    for old, new in (("/etc/ssl/edl", str(ssl)), ("listen 443", f"listen 127.0.0.1:{port}"),
                     ("127.0.0.1:8000", f"127.0.0.1:{api_port}")):
        assert old in site, f"deploy/nginx-edl.conf no longer has {old!r}"
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    temp = tmp_path / "nginx-tmp"
    temp.mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};\n"
        f"  uwsgi_temp_path {temp}; scgi_temp_path {temp};\n"
        f"  include {tmp_path}/site.conf;\n}}\n"
    )
    return main


def test_the_nginx_config_serves_the_api_over_tls_and_limits_a_flood(tmp_path: Path) -> None:
    env = service_env(tmp_path, EDL_API_KEY=SUPER_KEY)
    with running_server(env, tmp_path) as (_, base):
        port = free_port()
        conf = _site(tmp_path, port, base.rsplit(":", 1)[1])
        checked = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True,
                                 text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        nginx = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"https://127.0.0.1:{port}"
            with httpx.Client(verify=False, timeout=5) as client:
                deadline = time.monotonic() + 15
                while True:
                    try:
                        if client.get(f"{url}/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "nginx did not come up"
                    time.sleep(0.1)
                me = client.get(f"{url}/me", headers=h(SUPER_KEY))
                assert me.status_code == 200
                assert me.json()["role"] == "super"
                assert client.get(f"{url}/me", headers=h("nope")).status_code == 401
                # 20 r/s with a burst of 200 per client address: a flood is cut short
                statuses = [client.get(f"{url}/healthz").status_code for _ in range(400)]
            assert statuses.count(429) > 0
            assert statuses.count(200) >= 200
        finally:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_units_verify(tmp_path: Path) -> None:
    """The units as shipped, pointed at this checkout's `edl-api` instead of /opt/edl."""
    edl_api = Path(sys.executable).with_name("edl-api")
    assert edl_api.exists()
    units = {"edl-api.service": "edl-api.service", "edl-worker@.service": "edl-worker@1.service"}
    for shipped, name in units.items():
        text = (ROOT / "deploy" / shipped).read_text()
        assert "/opt/edl/.venv/bin/edl-api" in text
        (tmp_path / name).write_text(text.replace("/opt/edl/.venv/bin/edl-api", str(edl_api)))
        checked = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
