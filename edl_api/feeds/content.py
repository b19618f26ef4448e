"""Pure functions on feed bytes and lines: hashing, compression, order and diffs.

What an indicator *is* (parsing, kinds, aggregation) belongs to the engine
(`engine/indicators.py`, `engine/aggregate.py`); this module only handles published lines.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable
from itertools import islice

from edl_api.engine.indicators import sort_key

GZIP_LEVEL = 6
DIFF_SAMPLE = 20


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def gzip_bytes(content: bytes) -> bytes:
    # mtime=0: the same content always compresses to the same bytes.
    return gzip.compress(content, compresslevel=GZIP_LEVEL, mtime=0)


def split_lines(content: bytes) -> list[str]:
    return [line for line in content.decode("utf-8").split("\n") if line]


def join_lines(lines: Iterable[str]) -> bytes:
    text = "\n".join(lines)
    return (text + "\n").encode("utf-8") if text else b""


def sorted_lines(lines: Iterable[str]) -> list[str]:
    """Distinct lines in CONFIG.md plain order (IPs numerically, then names)."""
    return sorted(set(lines), key=sort_key)


def diff_summary(old: set[str] | None, new: set[str]) -> dict[str, object]:
    """Per-type diff for run.diff: counts plus a short sorted sample of each side."""
    previous = old or set()
    added = new - previous
    removed = previous - new
    return {
        "added": len(added),
        "removed": len(removed),
        # A sample, not the first N: sorting a million-entry diff is not worth its time.
        "added_sample": sorted(islice(added, DIFF_SAMPLE), key=sort_key),
        "removed_sample": sorted(islice(removed, DIFF_SAMPLE), key=sort_key),
        "previous": len(previous),
    }
