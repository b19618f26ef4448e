"""The benchmark suite still runs: `bench/run.py --smoke` end to end, JSON shape only.

Toy sizes, no nginx/wrk (those figures come back skipped). Never asserts speed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import peers_bench  # noqa: E402

KEYS = {"name", "value", "unit", "reference", "ratio", "target", "ok"}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_smoke_run_writes_one_object_per_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--json", str(out),
         "--log", str(tmp_path / "bench.log")],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert isinstance(figures, list)
    assert figures
    names = [f["name"] for f in figures]
    assert len(names) == len(set(names)), names
    for figure in figures:
        assert KEYS <= set(figure), figure
        assert isinstance(figure["name"], str)
        assert isinstance(figure["unit"], str)
        assert figure["ok"] in (True, False, None)
        for key in ("reference", "ratio", "target"):
            assert figure[key] is None or _number(figure[key]), figure
        if figure["value"] is None:  # a skipped figure says why, and is not judged
            assert figure["ok"] is None, figure
            assert figure.get("note"), figure
        else:
            assert _number(figure["value"]), figure
    measured = {f["name"] for f in figures if f["value"] is not None}
    # every part produced at least one figure (a failed part shows up as "<part>_failed")
    assert not [n for n in names if n.endswith("_failed")], [
        f for f in figures if f["name"].endswith("_failed")]
    for prefix in ("engine_", "api_", "publish_", "search_", "auth_", "machine_"):
        assert any(n.startswith(prefix) for n in measured), (prefix, sorted(measured))
    # ours beside the peers on the same IP input: each peer either ran and produced the
    # same prefix set, or is skipped with the reason (smoke mode installs nothing)
    by_name = {f["name"]: f for f in figures}
    assert by_name["engine_ip_5k_wall"]["value"] > 0
    for peer in ("iprange", "aggregate6"):
        row = by_name[f"engine_ip_5k_vs_{peer}"]
        assert row["value"] is not None or row["note"].startswith("skipped:"), row
    differing = by_name["engine_ip_5k_peers_differing"]
    assert differing["value"] in (0, None), differing
    # the machine's speed before each part, each part's timing in the note
    for name in ("machine_python", "machine_fresh_memory", "machine_reused_memory"):
        probe = by_name[name]
        assert probe["value"] > 0, probe
        assert probe["ok"] is None, probe
        assert all(f"{part} " in probe["note"] for part in ("engine", "runs", "feeds")), probe
    # nginx/wrk are not used in the smoke mode: the serving figures are skipped
    serving = [f for f in figures if f["name"].startswith("feed_")]
    assert serving
    assert all(f["ok"] is None for f in serving)


def test_peer_input_is_public_and_the_comparison_says_how_outputs_differ(tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    peers_bench.generate(source, hosts=2_000, cidrs=400)
    prefixes = peers_bench.read_prefixes(source)
    lines = source.read_text().split()
    assert len(lines) == 2_400
    assert sum("/" in line for line in lines) == 400
    firsts, lasts = peers_bench.reserved_bounds()
    for first, last in peers_bench.intervals(prefixes):  # nothing the engine drops as reserved
        assert all(last < lo or first > hi for lo, hi in zip(firsts, lasts, strict=True))

    (tmp_path / "a.txt").write_text("# ours\n8.8.8.0/24\n1.1.1.1\n")
    (tmp_path / "b.txt").write_text("8.8.8.0/25\n8.8.8.128/25\n1.1.1.1/32\n")
    (tmp_path / "c.txt").write_text("8.8.8.0/24\n1.1.1.2\n")
    ours = peers_bench.read_prefixes(tmp_path / "a.txt")
    assert ours == {(0x08080800, 24), (0x01010101, 32)}
    assert peers_bench.compare(ours, set(ours), "peer") is None
    split = peers_bench.compare(ours, peers_bench.read_prefixes(tmp_path / "b.txt"), "peer")
    assert split is not None
    assert split.startswith("same addresses, other prefixes")
    other = peers_bench.compare(ours, peers_bench.read_prefixes(tmp_path / "c.txt"), "peer")
    assert other is not None
    assert other.startswith("different address sets")
