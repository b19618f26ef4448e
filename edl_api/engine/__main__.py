"""Engine CLI: the child process the run layer spawns, and the offline commands.

    python -m edl_api.engine run --config FILE --out DIR --settings FILE
    python -m edl_api.engine check-config FILE

`run` writes DIR/<type>.txt (plain), DIR/entries.grouped and DIR/report.json and exits
0 on success, 2 when the engine result is not ok, 1 on a crash. Its settings come from
the `--settings` JSON file alone (the run layer's one channel: SSRF grants, source
folder, deadline, the run's secrets, its memory limit and byte budget); the environment
is read only by `run-local`. Its stdout is the run log: progress as typed events
(`engine.progress`), other lines as text, never a header value or secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from edl_api.engine.config import ConfigError, PipelineConfig, load_config
from edl_api.engine.destinations import private_destinations
from edl_api.engine.entries_file import ENTRIES_FILE, write_entries, write_plain
from edl_api.engine.explain import FILE_NAME as EXPLAIN_FILE
from edl_api.engine.limits import apply_memory_limit, memory_error
from edl_api.engine.pipeline import (
    EngineResult,
    EngineSettings,
    Progress,
    run_pipeline,
)
from edl_api.engine.progress import ProgressEvent, TerminalProgress, describe, format_event

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_NOT_OK = 2
SECRET_PREFIX = "EDL_SECRET_"
# What a settings file may set (`resolver` is for tests in-process only).
SETTINGS_FIELDS = frozenset(f.name for f in fields(EngineSettings)) - {"resolver"}
STATE_FILE = "state.json"  # per-source state for the next run (`engine.stateful`)


def sanitise(text: str, limit: int = 2000) -> str:
    """One printable line: control characters (ANSI escapes, CR, NUL…) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:limit]


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {sanitise(message)}", flush=True)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def settings_from_env() -> EngineSettings:
    """`run-local`'s settings: EDL_SSRF_ALLOW_*, EDL_SOURCE_DIR (read as the folder itself:
    offline there is no profile), EDL_RUN_TIMEOUT_SECONDS, and `${secret:NAME}` from the
    environment's EDL_SECRET_NAME (the operator's own shell, not a tenant's run)."""
    deadline = os.environ.get("EDL_RUN_TIMEOUT_SECONDS")
    return EngineSettings(
        ssrf_allow_cidrs=_split(os.environ.get("EDL_SSRF_ALLOW_CIDRS")),
        ssrf_allow_hosts=_split(os.environ.get("EDL_SSRF_ALLOW_HOSTS")),
        source_dir=os.environ.get("EDL_SOURCE_DIR") or None,
        total_deadline_seconds=(
            float(deadline) if deadline else EngineSettings.total_deadline_seconds
        ),
        secrets={
            k.removeprefix(SECRET_PREFIX): v
            for k, v in os.environ.items() if k.startswith(SECRET_PREFIX)
        },
    )


def settings_to_json(settings: EngineSettings) -> str:
    """The `--settings` file's text for these settings (the run layer writes it)."""
    values = {k: v for k, v in asdict(settings).items() if k in SETTINGS_FIELDS}
    return json.dumps({**values, "secrets": dict(settings.secrets)})


def settings_from_json(text: str) -> EngineSettings:
    """EngineSettings from a settings file; an unknown or mistyped field is an error."""
    values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError("the settings file must hold a JSON object")
    unknown = set(values) - SETTINGS_FIELDS
    if unknown:
        raise ValueError(f"unknown engine settings: {', '.join(sorted(unknown))}")
    for key in ("ssrf_allow_cidrs", "ssrf_allow_hosts"):
        if key in values:
            values[key] = tuple(str(v) for v in values[key])
    if "total_deadline_seconds" in values:
        values["total_deadline_seconds"] = float(values["total_deadline_seconds"])
    now = values.get("now")
    if now is not None:
        if type(now) not in (int, float) or now <= 0:
            raise ValueError("now must be epoch seconds (a positive number) or null")
        values["now"] = float(now)
    for key in ("memory_mb", "max_run_bytes"):
        value = values.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise ValueError(f"{key} must be a positive integer or null")
    secrets = values.get("secrets", {})
    if not isinstance(secrets, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
    ):
        raise ValueError("secrets must map names to strings")
    return EngineSettings(**values)


def _log_event(event: ProgressEvent) -> None:
    """run-local, piped: the run log's readable line for each event."""
    log(describe(event))


def _emit_event(event: ProgressEvent) -> None:
    """The child: one typed event per line, for the run layer to parse."""
    print(sanitise(format_event(event), limit=64 * 1024), flush=True)


def effective_options(config: PipelineConfig, settings: EngineSettings) -> dict[str, Any]:
    """What the run layer needs of the config and settings, so it never parses them again."""
    pipeline = config.pipeline
    return {
        "outputs": list(pipeline.outputs),
        "guard": {"max_shrink_percent": pipeline.guard.max_shrink_percent,
                  "allow_empty": pipeline.guard.allow_empty},
        "retain_missing_days": pipeline.retain_missing_days,
        "sources": len(config.sources),
        "total_deadline_seconds": settings.total_deadline_seconds,
    }


def write_outputs(result: EngineResult, out_dir: Path) -> None:
    """Plain feeds, provenance of every published entry, and the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for feed_type, entries in result.feeds.items():
        write_plain(entries, out_dir / f"{feed_type}.txt")
    write_entries(result.feeds, out_dir / ENTRIES_FILE)
    (out_dir / "report.json").write_text(
        json.dumps(result.report, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    if result.explain is not None:  # every dropped entry and why, for explain
        (out_dir / EXPLAIN_FILE).write_bytes(result.explain.to_bytes())


def _load(path: str) -> PipelineConfig:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return load_config(text)


def check_config_main(
    path: str, allow_cidrs: Sequence[str] = (), allow_hosts: Sequence[str] = ()
) -> int:
    """Print every problem with its line; 1 if there is any, 0 when the config is valid
    (then a warning for each private destination not in `allow_*`, EDL_SSRF_ALLOW_*)."""
    try:
        config = _load(path)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}")
        return 1
    except ConfigError as exc:
        for problem in exc.problems:
            where = f"line {problem.line}" if problem.line is not None else "-"
            field = f"{problem.field}: " if problem.field else ""
            print(sanitise(f"{path}:{where}: {field}{problem.message}"))
        return 1
    outputs = ", ".join(config.pipeline.outputs)
    print(f"{path}: ok ({len(config.sources)} sources, outputs: {outputs})")
    for warning in private_destinations(config, allow_cidrs, allow_hosts):
        print(sanitise(f"{path}: warning: {warning}"))
    return 0


def read_state(path: str | None) -> dict[str, Any]:
    """`--state FILE`: source name -> {key, data} of the last run (absent file: none)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ValueError("the state file must hold a JSON object")
    return data


def write_state(result: EngineResult, out_dir: Path) -> None:
    """`out/state.json` (tenant data: owner-only), written only for an ok run."""
    fd = os.open(out_dir / STATE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(result.state, handle, separators=(",", ":"))


def run_main(
    path: str,
    out_dir: str,
    settings: EngineSettings,
    progress: Progress,
    state_path: str | None = None,
) -> int:
    try:
        config = _load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log(f"config line {problem.line}: {problem.field}: {problem.message}")
        return EXIT_NOT_OK
    except OSError as exc:
        log(f"cannot read config: {exc.strerror}")
        return EXIT_CRASH
    try:
        state = read_state(state_path)
    except (OSError, ValueError) as exc:
        log(f"cannot read state file: {getattr(exc, 'strerror', None) or exc}")
        return EXIT_CRASH
    try:
        log(f"engine run: {len(config.sources)} sources, "
            f"deadline {settings.total_deadline_seconds:g}s")
        result = asyncio.run(run_pipeline(config, settings, progress, state))
        result.report["options"] = effective_options(config, settings)
        write_outputs(result, Path(out_dir))
        if result.ok:
            write_state(result, Path(out_dir))
    except MemoryError:
        return _memory_failure(config, settings, out_dir)
    except Exception as exc:  # noqa: BLE001 - the run log must say why, then exit 1
        log(f"engine crashed: {exc.__class__.__name__}")
        for line in traceback.format_exc().splitlines()[-8:]:
            log(f"  {line}")
        return EXIT_CRASH
    for error in result.errors:
        log(f"error: {error}")
    for warning in result.warnings:
        log(f"warning: {warning}")
    return EXIT_OK if result.ok else EXIT_NOT_OK


def _memory_failure(config: PipelineConfig, settings: EngineSettings, out_dir: str) -> int:
    """The run's one clear error when an allocation failed (the memory limit): what was
    allocated is released by now, so a small report can still be written."""
    message = memory_error(settings.memory_mb)
    log(f"error: {message}")
    report: dict[str, Any] = {
        "ok": False, "sources": [], "feeds": {}, "errors": [message], "warnings": [],
        "options": effective_options(config, settings),
    }
    try:
        write_outputs(EngineResult(feeds={}, report=report, errors=[message], ok=False),
                      Path(out_dir))
    except (MemoryError, OSError):
        return EXIT_CRASH
    return EXIT_NOT_OK


def run_local_main(path: str, out_dir: str, state_path: str | None = None) -> int:
    """`edl-api run-local FILE --out DIR`: run offline with settings from the environment.

    On a terminal a progress bar replaces the per-event log lines; piped, it logs each
    event as a readable line. `--state FILE` (a previous run's DIR/state.json) makes it
    incremental like a service run; an ok run writes DIR/state.json."""
    settings = settings_from_env()
    if sys.stderr.isatty():
        status = run_main(path, out_dir, settings, TerminalProgress(sys.stderr), state_path)
        print(f"{'done' if status == EXIT_OK else 'failed'}: see {Path(out_dir) / 'report.json'}")
        return status
    return run_main(path, out_dir, settings, _log_event, state_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edl_api.engine")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the engine on a config file")
    run.add_argument("--config", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--settings", required=True, help="EngineSettings as a JSON file")
    run.add_argument("--state", help="the last run's state.json (source name -> key, data)")
    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config_main(args.file)
    try:
        settings = settings_from_json(Path(args.settings).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        log(f"bad settings: {exc}")
        return EXIT_CRASH
    # Before any work: the whole run, parsing included, lives under the limit.
    apply_memory_limit(settings.memory_mb)
    return run_main(args.config, args.out, settings, _emit_event, args.state)


if __name__ == "__main__":
    sys.exit(main())
