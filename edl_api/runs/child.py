"""The engine child of one run: its settings, its process group, its output.

The run layer is the only place that turns service `Settings` and the run's `RunReach`
(`reach.py`: its profile's secrets, SSRF grants and folder) into `EngineSettings`
(`engine_settings`), with a deadline a little inside the run's own time limit. They
reach the child in one file (`settings.json`, mode 0600, in the run's work folder); its
environment is a minimal allowlist (`child_env`), nothing else of the parent's. The
child's stdout is parsed line by line: typed progress events (`engine.progress`) update
the run's progress and become readable log lines; anything else is logged as it is,
after the sanitiser (which also redacts the run's own secret values).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edl_api.engine.__main__ import settings_to_json
from edl_api.engine.pipeline import EngineSettings
from edl_api.engine.progress import ProgressState, describe, parse_event
from edl_api.logging_setup import RedactingFilter
from edl_api.runs.logs import RunLog, Sanitiser
from edl_api.runs.reach import RunReach
from edl_api.runs.state import error_line
from edl_api.settings import Settings

# The child command; tests may point it at a stand-in engine.
ENGINE_COMMAND: list[str] | None = None
TERM_GRACE_SECONDS = 2.0
MAX_LINE_BYTES = 64 * 1024
# The engine stops fetching this long before the run's time limit, so that it can still
# write its report (and the run fail with the engine's reason, not a kill).
DEADLINE_MARGIN_SECONDS = 10.0

StopReason = Literal["cancelled", "timed_out", "interrupted"]


def engine_command() -> list[str]:
    return list(ENGINE_COMMAND or [sys.executable, "-m", "edl_api.engine"])


def engine_deadline(time_limit: float) -> float:
    """The engine's own deadline: the run's limit less a margin (at most 10 % of it)."""
    return max(time_limit - min(DEADLINE_MARGIN_SECONDS, time_limit * 0.1), 0.1)


def engine_settings(
    settings: Settings, time_limit: float, reach: RunReach | None = None
) -> EngineSettings:
    """Everything the engine child may use: the run's reach (no reach: the global SSRF
    grants only, no files, no secrets) and its deadline."""
    reach = reach or RunReach(tuple(settings.ssrf_allow_cidrs), tuple(settings.ssrf_allow_hosts))
    return EngineSettings(
        ssrf_allow_cidrs=reach.ssrf_allow_cidrs,
        ssrf_allow_hosts=reach.ssrf_allow_hosts,
        source_dir=reach.source_dir,
        total_deadline_seconds=engine_deadline(time_limit),
        secrets=dict(reach.secrets),
        memory_mb=settings.run_memory_mb,
        max_run_bytes=settings.run_max_bytes,
    )


# What of the parent's environment the child gets: how to find Python and its packages,
# locale and time zone. Anything else (keys, database URL, EDL_SECRET_*, a variable some
# other part of the host set) stays out; what the engine needs is in its settings file.
CHILD_ENV_NAMES = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "VIRTUAL_ENV",
    "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8",
    "PYTHONDONTWRITEBYTECODE", "PYTHONSAFEPATH",
})


def child_env() -> dict[str, str]:
    """The engine child's whole environment (an allowlist, not a denylist)."""
    env = {
        k: v for k, v in os.environ.items() if k in CHILD_ENV_NAMES or k.startswith("LC_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    # The child runs under RLIMIT_AS (EDL_RUN_MEMORY_MB), which counts address space:
    # glibc reserves 64 MiB per malloc arena, up to 8 per core; two are plenty here.
    env["MALLOC_ARENA_MAX"] = "2"
    return env


class RunSanitiser(Sanitiser):
    """The service's sanitiser, also redacting the values of this run's own secrets (the
    engine never prints them; this holds even if an upstream echoes one back)."""

    def __init__(self, base: Sanitiser, secrets: Iterable[str]) -> None:
        self._base = base
        self._run_redactor = RedactingFilter([s for s in secrets if s])

    def line(self, raw: bytes | str) -> str:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return self._base.line(self._run_redactor.redact(text))


@dataclass
class RunControl:
    """What the dispatcher knows of one of its runs while it executes."""

    run_id: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: StopReason | None = None
    lines: int = 0
    last_line: str = ""
    last_error: str = ""  # the last line that looked like an error (`state.error_line`)
    progress_state: ProgressState = field(default_factory=ProgressState)
    pid: int | None = None

    @property
    def stage(self) -> str:
        return self.progress_state.stage

    @stage.setter
    def stage(self, value: str) -> None:
        self.progress_state.stage = value

    def progress(self) -> dict[str, Any]:
        state = self.progress_state
        return {
            "stage": state.stage, "sources_done": state.sources_done,
            "sources_total": state.sources_total, "lines": self.lines,
            "last_line": self.last_line,
        }

    def request_stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


class EngineChild:
    """Starts the engine for one run in its own process group and follows it to its end."""

    def __init__(self, control: RunControl, run_log: RunLog, sanitiser: Sanitiser) -> None:
        self.control = control
        self.run_log = run_log
        self.sanitiser = sanitiser
        self.proc: asyncio.subprocess.Process | None = None

    async def start(
        self, workdir: Path, snapshot: str, settings: EngineSettings,
        state_file: Path | None = None,
    ) -> asyncio.subprocess.Process:
        """`state_file`: the pipeline's per-source state (`runs.sourcestate`), passed as
        `--state`; the child writes the new one to out/state.json."""
        out_dir = workdir / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "config.yaml"
        config_file.write_text(snapshot, encoding="utf-8")
        settings_file = workdir / "settings.json"
        # The run's secrets are in it: readable by this user only, gone with the workdir.
        fd = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(settings_to_json(settings))
        self.proc = await asyncio.create_subprocess_exec(
            *engine_command(), "run", "--config", str(config_file), "--out", str(out_dir),
            "--settings", str(settings_file),
            *(("--state", str(state_file)) if state_file is not None else ()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            cwd=str(workdir), env=child_env(),
        )
        self.control.pid = self.proc.pid
        self.control.stage = "engine"
        return self.proc

    async def wait(self, time_limit: float) -> int:
        """Pump the output until the child exits, stopping it on cancel, stop or timeout."""
        proc = self.proc
        assert proc is not None
        assert proc.stdout is not None
        pump = asyncio.create_task(self._pump(proc.stdout))
        returncode = await self._supervise(proc, time_limit)
        try:
            async with asyncio.timeout(5):
                await pump  # cancelled with us on timeout
        except TimeoutError:
            pump.cancel()
        return returncode

    async def _supervise(self, proc: asyncio.subprocess.Process, timeout: float) -> int:
        control = self.control
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(control.stop.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                control.request_stop("timed_out")
                await terminate(proc)
            return await waiter
        except asyncio.CancelledError:
            control.request_stop("interrupted")
            await asyncio.shield(terminate(proc))
            raise
        finally:
            stopper.cancel()

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        while True:
            chunk = await stream.read(64 * 1024)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_LINE_BYTES:  # a runaway line without a newline
                lines.append(pending)
                pending = b""
            for raw in lines:
                await self._line(raw)
            self.run_log.flush()
        if pending:
            await self._line(pending)
        self.run_log.flush()

    async def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        event = parse_event(text)
        if event is not None:
            self.control.progress_state.apply(event)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            text = f"{stamp} {describe(event)}"
        line = self.sanitiser.line(text)
        if not line:
            return
        self.control.lines += 1
        self.control.last_line = line[:300]
        if (error := error_line(line)) is not None:
            self.control.last_error = error
        await self.run_log.write(line)


async def terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the child's group, SIGKILL it after a grace period."""
    if proc.returncode is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TERM_GRACE_SECONDS):
            await asyncio.shield(proc.wait())
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
