"""Engine CLI: the child process the run layer spawns, and the offline commands.

    python -m edl_api.engine run --config FILE --out DIR [--settings-json JSON]
    python -m edl_api.engine check-config FILE

`run` writes DIR/<type>.txt (plain), DIR/entries.jsonl and DIR/report.json and exits
0 on success, 2 when the engine result is not ok, 1 on a crash. Its stdout is the
run log: one sanitised line per event, never a header value or secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from edl_api.engine.config import ConfigError, PipelineConfig, load_config
from edl_api.engine.pipeline import (
    EngineResult,
    EngineSettings,
    FeedEntry,
    Progress,
    run_pipeline,
)
from edl_api.engine.progress import TerminalProgress

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_NOT_OK = 2
_SETTINGS_KEYS = ("ssrf_allow_cidrs", "ssrf_allow_hosts", "source_dir", "total_deadline_seconds")


def sanitise(text: str, limit: int = 2000) -> str:
    """One printable line: control characters (ANSI escapes, CR, NUL…) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:limit]


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {sanitise(message)}", flush=True)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def settings_from_env(overrides: dict[str, Any] | None = None) -> EngineSettings:
    """EngineSettings from EDL_* environment variables, then explicit overrides."""
    values: dict[str, Any] = {
        "ssrf_allow_cidrs": _split(os.environ.get("EDL_SSRF_ALLOW_CIDRS")),
        "ssrf_allow_hosts": _split(os.environ.get("EDL_SSRF_ALLOW_HOSTS")),
        "source_dir": os.environ.get("EDL_SOURCE_DIR") or None,
    }
    deadline = os.environ.get("EDL_RUN_TIMEOUT_SECONDS")
    if deadline:
        values["total_deadline_seconds"] = float(deadline)
    for key, value in (overrides or {}).items():
        if key not in _SETTINGS_KEYS:
            # A newer run layer may pass more; ignoring beats failing every run.
            log(f"ignoring unknown engine setting {key!r}")
            continue
        if key in ("ssrf_allow_cidrs", "ssrf_allow_hosts"):
            value = tuple(_split(value) if isinstance(value, str) else value)
        elif key == "total_deadline_seconds":
            value = float(value)
        values[key] = value
    return EngineSettings(**values)


def _progress(event: str, data: dict[str, Any]) -> None:
    if event == "source":
        indicators = ", ".join(f"{k}={v}" for k, v in data["indicators"].items()) or "none"
        invalid = sum(data["invalid"].values())
        line = (
            f"source {data['name']}: {data['status']} bytes={data['bytes']} lines={data['lines']}"
            f" indicators[{indicators}] invalid={invalid} {data['seconds']}s"
        )
        if data.get("error"):
            line += f" error: {data['error']}"
        log(line)
    elif event == "fetched":
        state = "ok" if data["ok"] else "failed"
        log(f"fetched {data['name']}: {state} bytes={data['bytes']} {data['seconds']}s")
    elif event == "stage":
        log(f"stage {data.get('stage')}")
    elif event == "done":
        published = ", ".join(f"{k}={v}" for k, v in data["published"].items())
        log(f"done ok={data['ok']} published[{published}]")


def _entry_json(entry: FeedEntry) -> str:
    return json.dumps(
        {
            "type": entry.indicator_type,
            "value": entry.value,
            "sources": entry.sources,
            "tags": entry.tags,
            "confidence": entry.confidence,
        },
        separators=(",", ":"),
    )


def write_outputs(result: EngineResult, out_dir: Path) -> None:
    """Plain feeds, provenance of every published entry, and the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for feed_type, entries in result.feeds.items():
        body = "".join(f"{e.value}\n" for e in entries)
        (out_dir / f"{feed_type}.txt").write_text(body, encoding="utf-8")
    seen: set[tuple[str, str]] = set()  # the ip feed repeats ipv4/ipv6/cidr entries
    with (out_dir / "entries.jsonl").open("w", encoding="utf-8") as handle:
        for entries in result.feeds.values():
            for entry in entries:
                key = (entry.indicator_type, entry.value)
                if key not in seen:
                    seen.add(key)
                    handle.write(_entry_json(entry) + "\n")
    (out_dir / "report.json").write_text(
        json.dumps(result.report, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )


def _load(path: str) -> PipelineConfig:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return load_config(text)


def check_config_main(path: str) -> int:
    """Print every problem with its line; 1 if there is any, 0 when the config is valid."""
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
    return 0


def run_main(
    path: str,
    out_dir: str,
    settings: EngineSettings | None = None,
    progress: Progress | None = None,
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
        settings = settings or settings_from_env()
        log(f"engine run: {len(config.sources)} sources")
        result = asyncio.run(run_pipeline(config, settings, progress or _progress))
        write_outputs(result, Path(out_dir))
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


def run_local_main(path: str, out_dir: str) -> int:
    """`edl-api run-local FILE --out DIR`: run offline with settings from the environment.

    On a terminal a progress bar replaces the per-event log lines; piped, it stays quiet
    and logs as the child process does."""
    if sys.stderr.isatty():
        status = run_main(path, out_dir, progress=TerminalProgress(sys.stderr))
        print(f"{'done' if status == EXIT_OK else 'failed'}: see {Path(out_dir) / 'report.json'}")
        return status
    return run_main(path, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edl_api.engine")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the engine on a config file")
    run.add_argument("--config", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--settings-json", default=None, help="EngineSettings fields as JSON")
    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config_main(args.file)
    try:
        overrides = json.loads(args.settings_json) if args.settings_json else None
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError("--settings-json must be a JSON object")
        settings = settings_from_env(overrides)
    except (ValueError, TypeError) as exc:
        log(f"bad settings: {exc}")
        return EXIT_CRASH
    return run_main(args.config, args.out, settings)


if __name__ == "__main__":
    sys.exit(main())
