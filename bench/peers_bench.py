"""Peers: our engine beside FireHOL `iprange --optimize` (C) and `aggregate6` (Python).

    python bench/peers_bench.py                       # 1M hosts + 200k CIDRs, median of 3
    python bench/peers_bench.py --install             # apt-get/pip the peers when missing
    python bench/peers_bench.py --hosts 5000 --cidrs 1000 --repeat 1 --json out.json

One generated input (public IPv4 hosts and network-aligned CIDRs /16-/30, none touching a
range the engine drops as reserved, shuffled together) goes to three processes, each
timed from spawn to exit (`os.wait4`: wall, CPU, peak RSS):

- ours: `edl-api run-local` with one `path:` source and `outputs: [ip]` (the minimal
  `ip` set, plus what run-local always writes: report, entries file);
- `iprange --optimize FILE` (Debian package `iprange`);
- `aggregate6 FILE` (PyPI, into this interpreter's environment).

The outputs are compared as sets of normalised prefixes (a /32 is the bare address);
when they differ, as address intervals too, so the report says whether the peer found
other addresses or the same ones in a non-minimal form. `--install` installs a missing
peer (the bench does this, never the service); without it, or when that fails, the peer
is reported as skipped with the reason. Every process is bounded by --max-seconds and
killed by its pid when it overruns.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edl_api.engine.special import RESERVED_V4_CIDRS  # noqa: E402

AGGREGATE6 = "aggregate6==1.0.15"  # pinned so the peer's figure means the same next time
CONFIG = ("sources:\n  - name: peers\n    path: input.txt\n    max_bytes: 2000000000\n"
          "pipeline:\n  outputs: [ip]\n")

Prefix = tuple[int, int]  # (network as int, prefix length)


def reserved_bounds() -> tuple[list[int], list[int]]:
    """Sorted, non-overlapping (firsts, lasts) of the reserved IPv4 ranges."""
    bounds = []
    for cidr in RESERVED_V4_CIDRS:
        net, plen = cidr.split("/")
        first = int.from_bytes(socket.inet_aton(net), "big")
        bounds.append((first, first + (1 << (32 - int(plen))) - 1))
    bounds.sort()
    return [b[0] for b in bounds], [b[1] for b in bounds]


def generate(path: Path, hosts: int, cidrs: int, seed: int = 18) -> None:
    """`hosts` public IPv4 addresses and `cidrs` aligned /16-/30 networks, shuffled.
    Nothing touches a reserved range: all three tools must see the same public input."""
    rng = random.Random(seed)
    firsts, lasts = reserved_bounds()

    def public(first: int, last: int) -> bool:
        # the last reserved range starting at or before `last` must end before `first`
        i = bisect.bisect_right(firsts, last) - 1
        return i < 0 or lasts[i] < first

    lines: list[str] = []
    while len(lines) < hosts:
        value = rng.getrandbits(32)
        if public(value, value):
            lines.append(socket.inet_ntoa(value.to_bytes(4, "big")))
    made = 0
    while made < cidrs:
        plen = rng.randint(16, 30)
        size = 1 << (32 - plen)
        first = rng.getrandbits(32) & ~(size - 1) & 0xFFFFFFFF
        if public(first, first + size - 1):
            lines.append(f"{socket.inet_ntoa(first.to_bytes(4, 'big'))}/{plen}")
            made += 1
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


# ---------------------------------------------------------------------------- the peers


def find_aggregate6() -> str | None:
    beside = Path(sys.executable).parent / "aggregate6"
    return str(beside) if beside.exists() else shutil.which("aggregate6")


def ensure_iprange(install: bool) -> tuple[str | None, str]:
    """(path, "") or (None, why it is skipped)."""
    found = shutil.which("iprange")
    if found:
        return found, ""
    if not install:
        return None, "iprange not installed (this mode installs nothing: apt-get install iprange)"
    if not shutil.which("apt-get"):
        return None, "iprange not installed and no apt-get here"
    print("installing iprange (apt-get) ...", flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "iprange"]
    try:
        if subprocess.run(cmd, env=env, timeout=300, capture_output=True).returncode != 0:
            # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update"], env=env, check=True, timeout=300,
                           capture_output=True)
            subprocess.run(cmd, env=env, check=True, timeout=300, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"could not install iprange with apt-get: {exc}"
    found = shutil.which("iprange")
    return (found, "") if found else (None, "apt-get installed no iprange binary")


def ensure_aggregate6(install: bool) -> tuple[str | None, str]:
    found = find_aggregate6()
    if found:
        return found, ""
    if not install:
        return None, ("aggregate6 not installed (this mode installs nothing: "
                      f"pip install {AGGREGATE6})")
    print(f"installing {AGGREGATE6} (pip) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", AGGREGATE6],
                       check=True, timeout=300, capture_output=True)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        return None, f"could not install {AGGREGATE6} with pip: {' '.join(tail) or exc}"
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"could not install {AGGREGATE6} with pip: {exc}"
    found = find_aggregate6()
    return (found, "") if found else (None, f"pip installed {AGGREGATE6} but no aggregate6 script")


def version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (subprocess.SubprocessError, OSError):
        return "?"
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) \
        else "?"


# ---------------------------------------------------------------------------- measuring


def timed(cmd: list[str], out: Path, timeout: float, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> dict[str, float]:
    """Run `cmd` with stdout to `out`; wall, CPU and peak RSS of that one child."""
    with out.open("wb") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE, env=env, cwd=cwd)
        # os.wait4 gives this child's own rusage; the timer kills it by pid on overrun
        timer = threading.Timer(timeout, lambda: os.kill(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        why = "killed after the time bound" if proc.returncode == -signal.SIGKILL else \
            f"exited {proc.returncode}"
        raise RuntimeError(f"{cmd[0]} {why}: {err.strip()[-500:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def read_prefixes(path: Path) -> set[Prefix]:
    """One prefix a line (`a.b.c.d` or `a.b.c.d/n`); comments and blanks skipped."""
    found: set[Prefix] = set()
    aton = socket.inet_aton
    with path.open(encoding="ascii") as lines:
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            net, _, plen = line.partition("/")
            found.add((int.from_bytes(aton(net), "big"), int(plen) if plen else 32))
    return found


def intervals(prefixes: set[Prefix]) -> list[tuple[int, int]]:
    """The address set as sorted, merged [first, last] intervals."""
    merged: list[tuple[int, int]] = []
    for net, plen in sorted(prefixes):
        last = net + (1 << (32 - plen)) - 1
        if merged and net <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((net, last))
    return merged


def addresses(spans: list[tuple[int, int]]) -> int:
    return sum(last - first + 1 for first, last in spans)


def compare(ours: set[Prefix], theirs: set[Prefix], peer: str) -> str | None:
    """None when both are the same prefixes; else how they differ, in one line."""
    if ours == theirs:
        return None
    a, b = intervals(ours), intervals(theirs)
    only_ours, only_theirs = len(ours - theirs), len(theirs - ours)
    if a == b:
        return (f"same addresses, other prefixes: {only_ours} only in ours, {only_theirs} "
                f"only in {peer} (one of the two is not minimal)")
    return (f"different address sets: ours {addresses(a):,} addresses in {len(ours):,} "
            f"prefixes, {peer} {addresses(b):,} in {len(theirs):,}; {only_ours:,} prefixes "
            f"only in ours, {only_theirs:,} only in {peer}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="edl-peers-"))
    try:
        source = work / "input.txt"
        # In a process of its own: a child's peak RSS (`ru_maxrss`, what wait4 reports)
        # starts from its parent's at fork, and generating here put ~140 MB under every tool.
        subprocess.run([sys.executable, __file__, "--generate-to", str(source), "--hosts",
                        str(args.hosts), "--cidrs", str(args.cidrs)], check=True)
        (work / "peers.yaml").write_text(CONFIG)
        report: dict[str, Any] = {"input": {"hosts": args.hosts, "cidrs": args.cidrs,
                                            "bytes": source.stat().st_size}}
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDL_")}
        env["EDL_SOURCE_DIR"] = str(work)
        tools: dict[str, list[str]] = {
            "ours": [sys.executable, "-m", "edl_api", "run-local", str(work / "peers.yaml"),
                     "--out", str(work / "ours")],
        }
        skipped: dict[str, str] = {}
        iprange, why = ensure_iprange(args.install)
        if iprange:
            tools["iprange"] = [iprange, "--optimize", str(source)]
        else:
            skipped["iprange"] = why
        aggregate6, why = ensure_aggregate6(args.install)
        if aggregate6:
            tools["aggregate6"] = [aggregate6, str(source)]
        else:
            skipped["aggregate6"] = why
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
        # interleaved repetitions: a noisy minute hits every tool, not one
        for _ in range(args.repeat):
            for name, cmd in tools.items():
                out = work / f"{name}.out"
                runs[name].append(timed(cmd, out, args.max_seconds, env=env, cwd=ROOT))
        ours = read_prefixes(work / "ours" / "ip.txt")
        for name, measured in runs.items():
            row: dict[str, Any] = {
                key: statistics.median(r[key] for r in measured)
                for key in ("wall", "cpu", "peak_rss_mb")}
            row["walls"] = [round(r["wall"], 3) for r in measured]
            if name == "ours":
                row["prefixes"] = len(ours)
                row["version"] = "edl-api run-local"
            else:
                theirs = read_prefixes(work / f"{name}.out")
                row["prefixes"] = len(theirs)
                row["differs"] = compare(ours, theirs, name)
                row["version"] = version([tools[name][0], "--version" if name == "iprange"
                                          else "-V"])
            report[name] = row
        for name, why in skipped.items():
            report[name] = {"skipped": why}
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--cidrs", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--install", action="store_true",
                        help="install a missing peer (apt-get iprange, pip aggregate6)")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="bound on each tool's run")
    parser.add_argument("--json", default=None, help="write the report to this file")
    parser.add_argument("--generate-to", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_to:
        generate(Path(args.generate_to), args.hosts, args.cidrs)
        return 0
    report = run(args)
    print(f"peers: {args.hosts:,} IPv4 hosts + {args.cidrs:,} CIDRs "
          f"({report['input']['bytes']:,} bytes), median of {args.repeat}; "
          f"load {os.getloadavg()[0]:.2f}")
    ours = report["ours"]
    for name in ("ours", "iprange", "aggregate6"):
        row = report[name]
        if "skipped" in row:
            print(f"  {name:<10} skipped: {row['skipped']}")
            continue
        ratio = "" if name == "ours" else f"  ours/{name} {ours['wall'] / row['wall']:.2f}"
        same = "" if name == "ours" else \
            f"  {'same set' if row['differs'] is None else 'DIFFERS: ' + row['differs']}"
        print(f"  {name:<10} wall {row['wall']:7.2f} s  cpu {row['cpu']:7.2f} s  peak RSS "
              f"{row['peak_rss_mb']:7.1f} MB  {row['prefixes']:,} prefixes  "
              f"(walls {row['walls']}){ratio}{same}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
