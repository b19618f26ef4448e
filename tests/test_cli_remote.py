"""`edl-api runs …` and `edl-api feeds list` against a real `edl-api serve` on loopback.

Most calls run the CLI in this process (`cli.main`, a second each saved); one runs the
installed command as a process, end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edl_api.cli import main
from tests.conftest import SUPER_KEY
from tests.helpers import FINISHED, basic, free_port, h, running_server, service_env

GOOD_YAML = "sources:\n  - name: inline\n    values: [162.243.103.246, evil.example]\n"
# A private destination no setting allows: the run fails, saying why.
BAD_YAML = "sources:\n  - name: private\n    url: http://10.255.255.1/feed.txt\n"


@dataclass
class Served:
    base: str
    profile_id: int
    profile_key: str
    pipeline_id: int
    good_run: int
    bad_run: int
    device_token: str


def _run(client: httpx.Client, pipeline_id: int) -> int:
    run = client.post("/runs", json={"pipeline_id": pipeline_id}, headers=h()).json()
    deadline = time.monotonic() + 30
    while client.get(f"/runs/{run['id']}", headers=h()).json()["state"] not in FINISHED:
        assert time.monotonic() < deadline, "run did not finish"
        time.sleep(0.1)
    return int(run["id"])


def _pipeline(client: httpx.Client, profile_id: int, name: str, yaml: str) -> int:
    config = client.post(
        f"/profiles/{profile_id}/configs", json={"name": name, "yaml": yaml}, headers=h()
    )
    assert config.status_code == 201, config.text
    pipeline = client.post(
        "/pipelines", json={"profile_config_id": config.json()["id"], "name": name}, headers=h()
    )
    assert pipeline.status_code == 201, pipeline.text
    return int(pipeline.json()["id"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("remote")
    env = service_env(folder, EDL_API_KEY=SUPER_KEY, EDL_AUTO_REFRESH_MINUTES="0")
    with running_server(env, folder) as (_, base), httpx.Client(base_url=base, timeout=10) as c:
        created = c.post("/profiles", json={"name": "acme"}, headers=h()).json()
        profile_id = created["profile"]["id"]
        good = _pipeline(c, profile_id, "good", GOOD_YAML)
        bad = _pipeline(c, profile_id, "bad", BAD_YAML)
        device = c.post(f"/profiles/{profile_id}/devices", headers=h(), json={
            "name": "pa-edge", "vendor": "panos", "model": "PA-3260",
            "feeds": [{"pipeline_id": good, "indicator_type": "ip", "format": "panos"}],
        })
        assert device.status_code == 201, device.text
        yield Served(base, profile_id, created["api_key"], good, _run(c, good), _run(c, bad),
                     device.json()["token"])


def _cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str | None,
    url: str, *args: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv("EDL_CLI_URL", url)
    if key is None:
        monkeypatch.delenv("EDL_CLI_KEY", raising=False)
    else:
        monkeypatch.setenv("EDL_CLI_KEY", key)
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_list_show_and_logs(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _cli(capsys, monkeypatch, SUPER_KEY, served.base, "runs", "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert "succeeded" in rows[str(served.good_run)]
    assert "ip=1" in rows[str(served.good_run)]
    # A failed run says why in the list itself: its source was refused (a private address).
    assert "failed" in rows[str(served.bad_run)]
    assert "error: source private: refused" in rows[str(served.bad_run)]

    code, out, _ = _cli(capsys, monkeypatch, SUPER_KEY, served.base, "runs", "show",
                        str(served.bad_run))
    assert code == 0
    assert out.startswith(f"run {served.bad_run}: failed")
    assert "  error: source private: refused" in out

    code, out, _ = _cli(capsys, monkeypatch, SUPER_KEY, served.base, "runs", "logs",
                        str(served.good_run))
    expected = httpx.get(f"{served.base}/runs/{served.good_run}/logs", headers=h()).text
    assert code == 0
    assert expected
    assert out == expected

    code, _, err = _cli(capsys, monkeypatch, SUPER_KEY, served.base, "runs", "show", "999999")
    assert code == 1
    assert err == "error: run 999999: not found (or outside this key's scope)\n"


def test_feeds_list_prints_urls_a_firewall_can_poll(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _cli(capsys, monkeypatch, served.profile_key, served.base, "feeds", "list")
    assert code == 0
    urls = [line.split()[-1] for line in out.splitlines() if not line.startswith("#")]
    pipeline_url = f"{served.base}/pipelines/{served.pipeline_id}/edl/ip"
    assert pipeline_url in urls
    device_url = next(u for u in urls if "format=panos" in u)
    for url in (pipeline_url, device_url):  # pasted as printed, they serve the feed
        feed = httpx.get(url, headers=basic(served.device_token), timeout=10)
        assert feed.status_code == 200
        assert "162.243.103.246" in feed.text
    # The super-admin sees the same rows (it lists the profiles itself).
    code, admin_out, _ = _cli(capsys, monkeypatch, SUPER_KEY, served.base, "feeds", "list")
    assert code == 0
    assert pipeline_url in admin_out
    assert device_url in admin_out


def test_errors_say_what_to_change(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _cli(capsys, monkeypatch, None, served.base, "runs", "list")
    assert code == 1
    assert out == ""
    assert "set EDL_CLI_KEY" in err
    code, _, err = _cli(capsys, monkeypatch, "edla_wrongwrongwrong", served.base, "runs", "list")
    assert code == 1
    assert "refused the key (401)" in err
    assert "EDL_CLI_KEY" in err
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, _, err = _cli(capsys, monkeypatch, SUPER_KEY, nowhere, "feeds", "list")
    assert code == 1
    assert f"cannot reach the EDL API at {nowhere}" in err
    assert "EDL_CLI_URL" in err
    assert "Traceback" not in err


def test_the_installed_command_end_to_end(served: Served, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edl_api", "runs", "list", "--json", "--url", served.base,
         "--trigger", "api"],
        env=service_env(tmp_path, EDL_CLI_KEY=served.profile_key), capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    ids = {run["id"] for run in json.loads(done.stdout)["items"]}
    assert ids == {served.good_run, served.bad_run}
