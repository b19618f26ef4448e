"""The IPv4 networks rule as arrays (engine.bulk_rules) against the per-network path:
the same pieces, drop counts, split counts and explain records, in the same order."""

from __future__ import annotations

import random

import pytest

from edl_api.engine.config import RulesConfig
from edl_api.engine.drops import DropRecorder
from edl_api.engine.rules import Allowlist, Rules


def _networks(seed: int, count: int) -> dict[tuple[int, int], int]:
    rng = random.Random(seed)
    mapping: dict[tuple[int, int], int] = {}
    for _ in range(count):
        prefixlen = rng.randrange(0, 32)
        # Near the reserved ranges and the allowlist below half the time.
        base = rng.choice([0x0A000000, 0xC0A80000, 0x7F000000, 0x08080000, 0x64400000,
                           rng.getrandbits(32)])
        network = (base + rng.getrandbits(20)) & ~((1 << (32 - prefixlen)) - 1) & 0xFFFFFFFF
        mapping[(network, prefixlen)] = rng.choice([1, 2, 3, 1 << 70 | 1])
    return mapping


def _run(mapping: dict[tuple[int, int], int], config: RulesConfig, python_path: bool) -> tuple:
    recorder = DropRecorder()
    rules = Rules(config, Allowlist.build(config.allow), lambda mask: 50, recorder)
    if python_path:  # a pattern that never matches sends IPv4 down the per-network loop
        rules.patterns = [__import__("re2").compile("x^")]
    pieces = rules._networks(dict(mapping), 4)
    return pieces, rules.drops["cidr"], rules.split, recorder.ranges, recorder.rules


@pytest.mark.parametrize("seed", range(8))
def test_array_networks_equal_python_path(seed: int) -> None:
    config = RulesConfig(
        allow=["8.8.0.0/20", "8.8.8.8", "100.64.3.0/24", "203.0.113.7"],
        exclude_reserved=seed % 4 != 3,
        min_prefix={"ipv4": [0, 8, 12, 20][seed % 4]},
    )
    mapping = _networks(seed, 3000)
    assert _run(mapping, config, False) == _run(mapping, config, True)


def test_empty_and_no_exclusions() -> None:
    config = RulesConfig(exclude_reserved=False, min_prefix={"ipv4": 0})
    assert _run({}, config, False) == _run({}, config, True)
    mapping = {(0x08000000, 8): 1, (0x01020300, 24): 2}
    assert _run(mapping, config, False)[0] == [(0x01020300, 0x010203FF, 2),
                                               (0x08000000, 0x08FFFFFF, 1)]
