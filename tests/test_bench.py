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
    for prefix in ("engine_", "api_", "publish_", "search_", "auth_"):
        assert any(n.startswith(prefix) for n in measured), (prefix, sorted(measured))
    # nginx/wrk are not used in the smoke mode: the serving figures are skipped
    serving = [f for f in figures if f["name"].startswith("feed_")]
    assert serving
    assert all(f["ok"] is None for f in serving)
