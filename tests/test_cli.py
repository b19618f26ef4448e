"""The operator's commands, run as real processes on loopback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import h, running_server, service_env

KEY_RE = re.compile(r"^edla_[0-9A-Za-z]{50}$")


def _cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edl_api", *args], env=service_env(tmp_path, **extra),
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )


def test_migrate_and_create_admin(tmp_path: Path) -> None:
    migrated = _cli(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "database at head" in migrated.stdout
    database = tmp_path / "data" / "edl.db"
    assert database.exists()
    created = _cli(tmp_path, "create-admin", "--name", "ops", "--super")
    assert created.returncode == 0, created.stderr
    assert KEY_RE.match(created.stdout.strip())  # the key alone on stdout, for $(…)
    # …and stderr says which database now holds it.
    assert f"created admin 'ops' (super-admin) in sqlite+aiosqlite:///{database}" in created.stderr
    bad = _cli(tmp_path, "create-admin", "--name", "x", "--role", "root")
    assert bad.returncode == 2


def _bare_cli(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI with no EDL_DATA_DIR / EDL_DATABASE_URL: it picks ./data like `serve` does."""
    env = {k: v for k, v in service_env(cwd, **extra).items() if k != "EDL_DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "edl_api", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_create_admin_in_the_wrong_folder_creates_no_database(tmp_path: Path) -> None:
    """Run from a folder where `serve` keeps no database, create-admin used to create a new
    ./data/edl.db and print a key the server then refused."""
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    refused = _bare_cli(elsewhere, "create-admin", "--name", "ops", "--super")
    assert refused.returncode == 1
    assert refused.stdout == ""  # no key that works nowhere
    assert f"no database at {elsewhere / 'data' / 'edl.db'}" in refused.stderr
    assert "--data-dir" in refused.stderr
    assert "EDL_DATABASE_URL" in refused.stderr
    assert not (elsewhere / "data").exists()
    # Named explicitly, a new database is fine (a first install) and is the one reported.
    named = _bare_cli(elsewhere, "create-admin", "--name", "ops", "--data-dir", "state")
    assert named.returncode == 0, named.stderr
    assert KEY_RE.match(named.stdout.strip())
    assert f"in sqlite+aiosqlite:///{elsewhere / 'state' / 'edl.db'}" in named.stderr
    # Where a database already is (serve ran here), the default folder needs no flag.
    (elsewhere / "data").mkdir()
    (elsewhere / "state" / "edl.db").rename(elsewhere / "data" / "edl.db")
    again = _bare_cli(elsewhere, "create-admin", "--name", "ops2")
    assert again.returncode == 0, again.stderr
    assert "(operator) in sqlite" in again.stderr


def test_version_and_help_name_each_option_default() -> None:
    from edl_api import __version__
    from edl_api.cli import build_parser

    version = subprocess.run(
        [sys.executable, "-m", "edl_api", "--version"], capture_output=True, text=True,
        timeout=30, check=False,
    )
    assert (version.returncode, version.stdout.strip()) == (0, f"edl-api {__version__}")
    serve_help = subprocess.run(
        [sys.executable, "-m", "edl_api", "serve", "--help"], capture_output=True, text=True,
        timeout=30, check=False,
    ).stdout
    assert "default 127.0.0.1" in serve_help
    assert "default 8000" in serve_help
    # Every option of every (nested) subcommand says its default, or that it is required.
    missing = []
    pending = [("edl-api", build_parser())]
    while pending:
        name, parser = pending.pop()
        for action in parser._actions:  # argparse exposes no public walk
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):  # a subparsers action
                pending += [(f"{name} {sub}", p) for sub, p in choices.items()]
            elif action.option_strings and action.dest not in ("help", "version"):
                text = action.help or ""
                if "default" not in text and "required" not in text:
                    missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []
    remote_help = subprocess.run(
        [sys.executable, "-m", "edl_api", "runs", "list", "--help"], capture_output=True,
        text=True, timeout=30, check=False,
    ).stdout
    assert "EDL_CLI_URL" in remote_help
    assert "EDL_CLI_KEY" in remote_help


def test_serve_end_to_end_and_clean_log(tmp_path: Path) -> None:
    key = _cli(tmp_path, "create-admin", "--name", "ops", "--super").stdout.strip()
    with running_server(service_env(tmp_path), tmp_path) as (proc, base):
        me = httpx.get(f"{base}/me", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert me.json()["role"] == "super"
        created = httpx.post(
            f"{base}/profiles", json={"name": "acme"}, headers=h(key), timeout=5
        )
        assert created.status_code == 201
        profile_key = created.json()["api_key"]
        who = httpx.get(f"{base}/me", headers=h(profile_key), timeout=5)
        assert who.json()["kind"] == "profile"
        assert httpx.get(f"{base}/readyz", timeout=5).json()["database"] == "ok"
    # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit.
    assert proc.returncode in (0, -signal.SIGTERM)
    log = (tmp_path / "logs" / "api.log").read_text()
    assert "edl-api stopped" in log  # the lifespan ran to its end
    # …and what uvicorn logs after it, before it re-raises the SIGTERM: lines are batched,
    # and the SIGTERM handler writes them before the process goes.
    assert "Finished server process" in log
    assert "POST /profiles 201" in log
    # one access line per request: ours (no uvicorn duplicate, which would also be unredacted)
    assert log.count("/readyz") == 1
    assert "uvicorn.access" not in log
    assert key not in log
    assert profile_key not in log
