"""`edl-api run-local`: feeds and report on disk; a progress bar only on a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

CONFIG = """\
sources:
  - name: inline
    values: [198.51.100.0/24, 8.8.8.8, bad.example, "http://evil.example/x"]
rules:
  exclude_reserved: false
pipeline:
  outputs: [ipv4, cidr, fqdn, url]
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDL_")}


def test_run_local_piped_is_quiet_and_writes_feeds(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "edl_api", "run-local", str(tmp_path / "c.yaml"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "ipv4.txt").read_text() == "8.8.8.8\n"
    assert (out / "cidr.txt").read_text() == "198.51.100.0/24\n"
    assert (out / "fqdn.txt").read_text() == "bad.example\n"
    assert (out / "url.txt").read_text() == "evil.example/x\n"
    assert "report.json" in os.listdir(out)
    assert "\r[" not in done.stderr  # no bar when not a terminal
    assert "source inline: ok" in done.stdout


def test_run_local_on_a_terminal_draws_a_bar(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edl_api",
            "run-local",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "out"),
        ],
        stdout=follower,
        stderr=follower,
        env=_env(),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert "[" + "#" * 30 + "] sources 1/1" in screen
    assert "stage: done" in screen
    assert "done: see" in screen
