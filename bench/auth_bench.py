"""Authenticated `GET /me` against unauthenticated `GET /healthz`, on a real server.

Starts `edl-api serve` on a free loopback port with a fresh SQLite database, creates
a super-admin key, and times sequential keep-alive requests, interleaving the two
endpoints in batches so machine noise hits both alike. bcrypt must be paid once per
key per process (verified-key cache), so the ratio should stay near 1.

    python bench/auth_bench.py [--requests 2000] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDL_")}
    env |= {
        "EDL_DATA_DIR": str(workdir / "data"),
        "EDL_LOG_DIR": str(workdir / "logs"),
        "EDL_LOG_LEVEL": "WARNING",
    }
    key = subprocess.run(
        [sys.executable, "-m", "edl_api", "create-admin", "--name", "bench", "--super"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edl_api", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base, key
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def timed(client: httpx.Client, path: str, headers: dict[str, str], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, key = start_server(Path(tmp))
        try:
            runs = []
            with httpx.Client(base_url=base, timeout=10) as client:
                timed(client, "/me", {"X-API-Key": key}, 50)  # warm-up (first bcrypt)
                timed(client, "/healthz", {}, 50)
                for _ in range(args.repeats):
                    health: list[float] = []
                    me: list[float] = []
                    for _ in range(10):
                        health += timed(client, "/healthz", {}, args.requests // 10)
                        me += timed(client, "/me", {"X-API-Key": key}, args.requests // 10)
                    runs.append(
                        {
                            "healthz_p50": statistics.median(health),
                            "me_p50": statistics.median(me),
                            "healthz_p99": percentile(health, 0.99),
                            "me_p99": percentile(me, 0.99),
                        }
                    )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result["ratio_p50"] = result["me_p50"] / result["healthz_p50"]
    print(f"{'figure':<28}{'value':>10}")
    for name, value in result.items():
        unit = "" if name.startswith("ratio") else " ms"
        print(f"{name:<28}{value:>10.3f}{unit}")
    print(
        f"target: me_p50 <= 1.5 x healthz_p50 -> {'ok' if result['ratio_p50'] <= 1.5 else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "name": "auth_me_vs_healthz_p50",
                        "value": result["ratio_p50"],
                        "unit": "x",
                        "reference": result["healthz_p50"],
                        "ratio": result["ratio_p50"],
                        "target": 1.5,
                        "ok": result["ratio_p50"] <= 1.5,
                    },
                    {
                        "name": "auth_me_p50_ms",
                        "value": result["me_p50"],
                        "unit": "ms",
                        "reference": result["healthz_p50"],
                        "ratio": result["ratio_p50"],
                        "target": None,
                        "ok": None,
                    },
                    {
                        "name": "auth_me_p99_ms",
                        "value": result["me_p99"],
                        "unit": "ms",
                        "reference": result["healthz_p99"],
                        "ratio": result["me_p99"] / result["healthz_p99"],
                        "target": None,
                        "ok": None,
                    },
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
