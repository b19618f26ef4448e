"""How fast this machine is right now: a fixed workload, in a fresh process.

This VM's speed moves by up to 1.6x within an hour with the same code and nothing else
running (bench/RESULTS.md), and the slow spells show in every figure that allocates. The
suite runs this before each part, so a figure can be read beside the machine's state
when it was taken instead of guessed at afterwards.

    python bench/machine_probe.py              # print the three timings
    python bench/machine_probe.py --json out   # also write them as JSON

- `python_s`: an interpreter-bound loop shaped like the engine's per-token ingest (strings
  built, split, looked up and stored in a dict; 300k of them);
- `fresh_memory_s`: 256 MB of never-touched memory written once (page faults: what the
  slow spells make dearer);
- `reused_memory_s`: the same 256 MB written again (no faults: memory bandwidth alone).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TOKENS = 300_000
MEMORY_BYTES = 256 << 20


def python_loop() -> float:
    started = time.perf_counter()
    seen: dict[str, int] = {}
    for i in range(TOKENS):
        text = f"host{i:x}.d{i % 977:x}.example"
        label, _, rest = text.partition(".")
        key = rest if label in seen else text
        seen[key] = seen.get(key, 0) | (1 << (i % 8))
    return time.perf_counter() - started


def memory() -> tuple[float, float]:
    started = time.perf_counter()
    block = np.empty(MEMORY_BYTES // 8, dtype=np.int64)
    block.fill(1)  # first touch: every page faulted in
    fresh = time.perf_counter() - started
    started = time.perf_counter()
    block.fill(2)
    reused = time.perf_counter() - started
    return fresh, reused


def probe() -> dict[str, float]:
    fresh, reused = memory()
    return {"python_s": python_loop(), "fresh_memory_s": fresh, "reused_memory_s": reused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="write the timings here")
    args = parser.parse_args()
    result = probe()
    print(", ".join(f"{key} {value:.3f}" for key, value in result.items()))
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
