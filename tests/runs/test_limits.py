"""Resource limits per run: the byte budget all sources share (decoded bytes, so gzip bombs
count inflated), max_bytes bounded by it at config write, and a normal run under the
default memory limit. The limits played as attacks on a real service (the memory limit
failing only that run, the feed unchanged): tests/security/test_queue.py."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edl_api.engine import limits
from edl_api.engine.__main__ import settings_to_json
from edl_api.engine.config import load_config
from edl_api.engine.limits import BudgetExceeded, ByteBudget, read_capped
from edl_api.engine.pipeline import EngineSettings, run_pipeline
from edl_api.engine.sources import maybe_gunzip
from edl_api.runs.child import child_env, engine_command
from edl_api.settings import Settings
from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import create_config, make_profile
from tests.helpers import answer, h, loopback

KIB = 1024
MIB = 1024 * 1024
# 16 MiB of one repeated line, ~16 KB gzipped.
GZIP_BOMB = gzip.compress(b"203.0.113.7\n" * (16 * MIB // 12), compresslevel=9)


def _bomb(body: bytes) -> Any:
    def route(handler: Any) -> bool:
        return answer(handler, 200, body, {"Content-Type": "text/plain",
                                           "Content-Encoding": "gzip"})
    return route


def _lines(count: int, seed: int) -> bytes:
    """`count` distinct public IPv4 addresses, one a line (`seed` picks the first octet)."""
    return b"".join(b"%d.%d.%d.7\n" % (20 + seed, i // 256 % 256, i % 256) for i in range(count))


def test_byte_budget_is_shared_and_names_the_source() -> None:
    budget = ByteBudget(100)
    budget.charge(60, "a")
    assert budget.remaining() == 40
    with pytest.raises(BudgetExceeded, match="run byte budget of 100 bytes reached"):
        budget.charge(41, "b")
    with pytest.raises(BudgetExceeded):
        budget.charge(1, "c")  # spent: every later charge fails too
    assert budget.error() == "run byte budget of 100 bytes reached at source b"
    assert ByteBudget(None).error() is None


def test_a_gzip_file_counts_inflated_and_stops_at_the_budget() -> None:
    budget = ByteBudget(MIB)
    budget.charge(len(GZIP_BOMB), "bomb")  # what reading the file charged
    with pytest.raises(BudgetExceeded):
        maybe_gunzip(GZIP_BOMB, 50 * MIB, budget, "bomb")
    # Inflated one step at a time: it stopped within a step of the budget, not at 16 MiB.
    assert budget.used <= MIB + len(GZIP_BOMB) + 1024 * KIB
    small = ByteBudget(MIB)
    body = gzip.compress(b"8.8.8.8\n" * 1000)
    small.charge(len(body), "ok")
    assert maybe_gunzip(body, 50 * MIB, small, "ok") == b"8.8.8.8\n" * 1000
    assert small.used == 8000  # the compressed bytes were given back


async def test_two_sources_over_the_budget_fail_the_run(tmp_path: Path) -> None:
    """Each source fits its own max_bytes, together they do not: the run fails with the
    budget's error, even though one of them is optional."""
    (tmp_path / "a.txt").write_bytes(_lines(20_000, 1))  # ~240 KB each
    (tmp_path / "b.txt").write_bytes(_lines(20_000, 2))
    yaml = (
        "sources:\n"
        "  - {name: a, path: a.txt}\n"
        "  - {name: b, path: b.txt, optional: true}\n"
    )
    config = load_config(yaml)
    fits = await run_pipeline(config, EngineSettings(source_dir=str(tmp_path),
                                                     max_run_bytes=600 * KIB))
    assert fits.ok, fits.errors
    over = await run_pipeline(config, EngineSettings(source_dir=str(tmp_path),
                                                     max_run_bytes=400 * KIB))
    assert not over.ok
    assert over.feeds == {"ipv4": [], "ipv6": [], "cidr": [], "fqdn": [], "url": [], "ip": []}
    # Both are read at once: whichever went over first is named.
    assert {f"run byte budget of 409600 bytes reached at source {name}" for name in "ab"} & set(
        over.errors
    ), over.errors


async def test_a_gzip_bomb_stops_at_the_budget(tmp_path: Path) -> None:
    """Content-Encoding: gzip, ~16 KB on the wire, 16 MiB inflated: refused at the 1 MiB
    budget although its max_bytes (50 MiB default) would have let it through."""
    with loopback(routes={"/bomb": _bomb(GZIP_BOMB)}) as server:
        config = load_config(f"sources:\n  - {{name: bomb, url: '{server.url}/bomb'}}\n")
        result = await run_pipeline(config, EngineSettings(
            ssrf_allow_cidrs=("127.0.0.0/8",), max_run_bytes=MIB,
        ))
    assert not result.ok
    assert "run byte budget of 1 MiB reached at source bomb" in result.errors
    (source,) = result.report["sources"]
    assert source["error"] == "run byte budget of 1 MiB reached"


async def test_max_bytes_above_the_budget_is_refused_at_write(
    tmp_path: Path, database_url: str | None
) -> None:
    settings = make_settings(tmp_path, database_url, run_max_bytes=10 * MIB)
    async with running_app(settings) as app, asgi_client(app) as client:
        profile_id, key = await make_profile(client)
        yaml = "sources:\n  - name: big\n    url: https://example.com/x\n    max_bytes: {}\n"
        refused = await client.post(
            f"/profiles/{profile_id}/configs",
            json={"name": "big", "yaml": yaml.format(10 * MIB + 1)}, headers=h(key),
        )
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["detail"]
        assert problem["field"] == "sources.0.max_bytes"
        assert problem["line"] == 4
        assert "run byte budget of 10 MiB (EDL_RUN_MAX_BYTES)" in problem["message"]
        created = await create_config(client, key, profile_id, "ok", yaml.format(10 * MIB))
        patched = await client.patch(
            f"/profiles/{profile_id}/configs/{created['id']}",
            json={"yaml": yaml.format(11 * MIB)}, headers=h(key),
        )
        assert patched.status_code == 422, patched.text


def test_a_normal_run_fits_the_default_limit(tmp_path: Path) -> None:
    """The engine child as the run layer starts it, at the default 2048 MiB (RLIMIT_AS
    counts address space: threads' stacks, re2, malloc arenas): 100k lines, a regex
    (re2) source and file reads in worker threads. Reports its peak RSS."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.txt").write_bytes(
        b"".join(_lines(25_000, seed) for seed in range(1, 5))
    )
    (tmp_path / "config.yaml").write_text(
        "sources:\n"
        "  - {name: big, path: big.txt}\n"
        "  - {name: rx, path: big.txt, format: regex, pattern: '(21\\.[0-9.]+)'}\n"
    )
    engine = EngineSettings(
        source_dir=str(tmp_path / "src"), memory_mb=settings.run_memory_mb,
        max_run_bytes=settings.run_max_bytes,
    )
    (tmp_path / "settings.json").write_text(settings_to_json(engine))
    proc = subprocess.Popen(
        [*engine_command(), "run", "--config", str(tmp_path / "config.yaml"),
         "--out", str(tmp_path / "out"), "--settings", str(tmp_path / "settings.json")],
        stdout=subprocess.DEVNULL, env=child_env(),
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert proc.returncode == 0, report["errors"]
    assert report["counts"]["published"]["ipv4"] == 100_000
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    print(f"peak RSS of a 100k-line run under {settings.run_memory_mb} MiB: "  # noqa: T201
          f"{peak_mib:.0f} MiB")
    assert peak_mib < settings.run_memory_mb


def test_a_small_file_under_a_large_max_bytes_fits_a_tight_limit(tmp_path: Path) -> None:
    """A file source reads what the file holds, not `max_bytes` worth of address space:
    a 10-line file with `max_bytes: 512 MiB` (the whole default run budget) succeeds in
    an engine child limited to 600 MiB (a valid EDL_RUN_MEMORY_MB), where reserving the
    cap up front failed the run with "memory limit reached"."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "small.txt").write_bytes(_lines(10, 1))
    (tmp_path / "config.yaml").write_text(
        f"sources:\n  - {{name: small, path: small.txt, max_bytes: {512 * MIB}}}\n"
    )
    engine = EngineSettings(source_dir=str(tmp_path / "src"), memory_mb=600,
                            max_run_bytes=512 * MIB)
    (tmp_path / "settings.json").write_text(settings_to_json(engine))
    proc = subprocess.run(
        [*engine_command(), "run", "--config", str(tmp_path / "config.yaml"),
         "--out", str(tmp_path / "out"), "--settings", str(tmp_path / "settings.json")],
        stdout=subprocess.DEVNULL, env=child_env(), timeout=60, check=False,
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert proc.returncode == 0, report["errors"]
    assert report["counts"]["published"]["ipv4"] == 10


@pytest.mark.parametrize(("cap", "expected"), [(1000, 100), (100, 100), (99, 100), (10, 11)])
def test_read_capped_reads_the_file_or_one_byte_past_the_cap(
    tmp_path: Path, cap: int, expected: int
) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"x" * 100)
    with path.open("rb") as handle:
        assert len(read_capped(handle, cap)) == expected


def test_read_capped_reads_on_when_the_file_grew_since_its_size_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appended to between `fstat` and the read: the whole file up to the cap, never the
    old size's worth passed off as the file."""
    path = tmp_path / "f.txt"
    path.write_bytes(b"1.2.3.4\n" * 100)  # 800 bytes; fstat says 80
    real = os.fstat

    def stale(fd: int) -> os.stat_result:
        found = real(fd)
        return os.stat_result((*found[:6], 80, *found[7:]))

    monkeypatch.setattr(limits.os, "fstat", stale)
    with path.open("rb") as handle:
        assert read_capped(handle, 10_000) == path.read_bytes()
    with path.open("rb") as handle:
        assert len(read_capped(handle, 400)) == 401  # over the cap: the caller refuses it
