"""Engine benchmark: N mixed indicators from a local file through the whole engine.

parse -> classify -> augment/rules (10k-entry allowlist) -> aggregate -> render every
feed in plain format. Each measurement runs in a fresh process so peak RSS is that
run's own; the median of `--repeat` runs is reported, the sizes' runs interleaved.

    python bench/engine_bench.py                 # 1M and 5M, 3 runs each
    python bench/engine_bench.py --sizes 1000000 --repeat 1
    python bench/engine_bench.py --json out.json   # also write the medians as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TLDS = ("com", "net", "org", "info", "ru", "cn", "io", "xyz", "top", "de", "co.uk")
WORDS = ("login", "secure", "update", "cdn", "mail", "pay", "verify", "files", "api", "img")


def _ipv4(rng: random.Random) -> str:
    return ".".join(str(x) for x in (rng.randint(1, 223), *rng.choices(range(256), k=3)))


def _ipv6(rng: random.Random) -> str:
    groups = [rng.choice(("2a00", "2a01", "2a02", "2606", "2804", "2400"))]
    groups += [f"{rng.getrandbits(16):x}" for _ in range(7)]
    return ":".join(groups)


def _cidr(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return f"{_ipv4(rng)}/{rng.randint(16, 30)}"
    return f"{_ipv6(rng)}/{rng.randint(32, 64)}"


def _fqdn(rng: random.Random) -> str:
    labels = [f"{rng.choice(WORDS)}{rng.getrandbits(24):x}"]
    if rng.random() < 0.5:
        labels.append(rng.choice(WORDS))
    return ".".join([*labels, f"d{rng.getrandbits(20):x}", rng.choice(TLDS)])


def _url(rng: random.Random) -> str:
    host = _fqdn(rng) if rng.random() < 0.8 else _ipv4(rng)
    port = f":{rng.randint(1024, 65535)}" if rng.random() < 0.2 else ""
    path = f"/{rng.getrandbits(40):x}/a.php?id={rng.randint(1, 9999)}"
    return f"{rng.choice(('http', 'https'))}://{host}{port}{path}"


def _junk(rng: random.Random) -> str:
    return rng.choice(
        (
            f"999.{rng.randint(0, 255)}.1.1",
            f"not_an_indicator_{rng.getrandbits(20)}",
            f"{rng.getrandbits(64):x}",
            f"1.2.3.4/{rng.randint(33, 99)}",
            "http://",
            f"bad..{rng.getrandbits(8)}.example",
        )
    )


def generate(path: Path, count: int, seed: int = 7) -> None:
    """60% IPv4, 10% IPv6, 10% CIDR, 10% FQDN, 10% URL; plus 5% junk and 20% duplicates."""
    rng = random.Random(seed)
    makers = (_ipv4, _ipv6, _cidr, _fqdn, _url)
    weights = (60, 10, 10, 10, 10)
    lines: list[str] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.20 and lines:
            lines.append(lines[rng.randrange(len(lines))])
        elif roll < 0.25:
            lines.append(_junk(rng))
        else:
            lines.append(rng.choices(makers, weights)[0](rng))
    path.write_text("# benchmark feed\n" + "\n".join(lines) + "\n")


def generate_allowlist(path: Path, count: int = 10_000, seed: int = 11) -> None:
    rng = random.Random(seed)
    entries = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            entries.append(f"{_ipv4(rng).rsplit('.', 1)[0]}.0/24")
        elif kind == 1:
            entries.append(_ipv4(rng))
        elif kind == 2:
            entries.append(_fqdn(rng))
        else:
            entries.append("*." + _fqdn(rng).split(".", 1)[1])
    path.write_text("\n".join(entries) + "\n")


CONFIG = """\
sources:
  - name: bench
    path: feed.txt
    max_bytes: 2000000000
    confidence: 70
    tags: [bench]
  - name: allow
    path: allow.txt
    role: allow
augment:
  url_hosts: true
  wildcard_parent: true
pipeline:
  outputs: [ipv4, ipv6, cidr, fqdn, url, ip]
"""


def child(data_dir: str) -> None:
    """One measured run (in its own process)."""
    from edl_api.engine.config import load_config
    from edl_api.engine.pipeline import EngineSettings, run_pipeline
    from edl_api.feeds.render import render

    started = time.perf_counter()
    config = load_config(CONFIG)
    result = asyncio.run(run_pipeline(config, EngineSettings(source_dir=data_dir)))
    engine_done = time.perf_counter()
    rendered = {t: render(e, t, "plain").count for t, e in result.feeds.items()}
    finished = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_kib = usage.ru_maxrss
    print(
        json.dumps(
            {
                "ok": result.ok,
                "wall": finished - started,
                "engine": engine_done - started,
                "render": finished - engine_done,
                "peak_rss_mb": peak_kib / 1024,
                "cpu": usage.ru_utime + usage.ru_stime,  # less sensitive to a busy machine
                "stages": result.report["seconds"],
                "published": rendered,
            }
        )
    )


def generate_apart(path: Path, count: int) -> None:
    """`generate` in a process of its own. A child's peak RSS (`ru_maxrss`) starts from its
    parent's at fork: made here, 5M entries (~570 MB) would show in every measured run (the
    1M run's read 558 MB)."""
    subprocess.run([sys.executable, __file__, "--generate-to", str(path), "--sizes", str(count)],
                   check=True)


def measure_once(data_dir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(data_dirs: dict[int, Path], repeat: int) -> dict[int, list[dict[str, Any]]]:
    """`repeat` runs per size, the sizes interleaved (1M, 5M, 1M, 5M, ...): this VM's speed
    drifts within minutes, and the 5M / 1M ratio must compare runs made in the same spell
    (taken one size after the other, it read 6.23 in a run where interleaved pairs on the
    same machine read 4.5)."""
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in data_dirs}
    for _ in range(repeat):
        for size, data_dir in data_dirs.items():
            runs[size].append(measure_once(data_dir))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the per-size medians to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--generate-to", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.generate_to:
        generate(Path(args.generate_to), int(args.sizes))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeat}")
    medians: dict[int, float] = {}
    report: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="edl-bench-") as tmp:
        data_dirs: dict[int, Path] = {}
        for size in (int(s) for s in args.sizes.split(",")):
            data_dirs[size] = Path(tmp) / str(size)
            data_dirs[size].mkdir()
            generate_allowlist(data_dirs[size] / "allow.txt")
            generate_apart(data_dirs[size] / "feed.txt", size)
        measured = measure(data_dirs, args.repeat)
        for size, runs in measured.items():
            wall = statistics.median(r["wall"] for r in runs)
            rss = statistics.median(r["peak_rss_mb"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            medians[size] = wall
            report[str(size)] = {
                "wall": wall, "peak_rss_mb": rss, "cpu": cpu, "walls": [r["wall"] for r in runs],
                "ok": all(r["ok"] for r in runs),
                "stages": {k: statistics.median(r["stages"][k] for r in runs)
                           for k in runs[0]["stages"]},
                "render": statistics.median(r["render"] for r in runs),
            }
            last = runs[-1]
            each = ", ".join(f"{r['wall']:.2f}" for r in runs)
            print(
                f"{size:>9,} indicators: wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                f"peak RSS {rss:7.1f} MB  (walls: {each})"
            )
            stages = ", ".join(f"{k} {v:.2f}" for k, v in last["stages"].items())
            print(f"{'':>11}stages (s): {stages}, render {last['render']:.2f}")
            print(f"{'':>11}published: {last['published']}")
    if 1_000_000 in medians and 5_000_000 in medians:
        print(f"5M / 1M wall ratio: {medians[5_000_000] / medians[1_000_000]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
