"""Engine progress as typed events, formatted and parsed on both sides of the process boundary.

The engine child writes one event per line (`format_event`): a marker, then one JSON
object. The run layer reads them back with `parse_event` (progress for the job view,
a readable line for the run log via `describe`); anything else the child prints is an
ordinary log line. `run-local` prints `describe(event)` or draws `TerminalProgress`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO, get_args

EventKind = Literal["stage", "fetched", "source", "done"]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))
MARKER = "@edl-event "


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


def format_event(event: ProgressEvent) -> str:
    """One line: the marker and a compact JSON object (no newline inside)."""
    return MARKER + json.dumps({"event": event.kind, **event.data}, separators=(",", ":"))


def parse_event(line: str) -> ProgressEvent | None:
    """The event a line carries, or None for an ordinary log line (or a malformed event)."""
    if not line.startswith(MARKER):
        return None
    try:
        payload = json.loads(line[len(MARKER):])
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    kind = payload.pop("event", None)
    if kind not in EVENT_KINDS:
        return None
    return ProgressEvent(kind, payload)


def describe(event: ProgressEvent) -> str:
    """The run log's readable line for an event."""
    data = event.data
    if event.kind == "source":
        indicators = ", ".join(f"{k}={v}" for k, v in (data.get("indicators") or {}).items())
        invalid = sum((data.get("invalid") or {}).values())
        line = (
            f"source {data.get('name')}: {data.get('status')} bytes={data.get('bytes')} "
            f"lines={data.get('lines')} indicators[{indicators or 'none'}] invalid={invalid} "
            f"{data.get('seconds')}s"
        )
        if data.get("error"):
            line += f" error: {data['error']}"
        return line
    if event.kind == "fetched":
        state = "ok" if data.get("ok") else "failed"
        return (f"fetched {data.get('name')}: {state} bytes={data.get('bytes')} "
                f"{data.get('seconds')}s")
    if event.kind == "stage":
        return f"stage {data.get('stage')}"
    published = ", ".join(f"{k}={v}" for k, v in (data.get("published") or {}).items())
    return f"done ok={data.get('ok')} published[{published}]"


@dataclass
class ProgressState:
    """What the job view shows of a run, folded from its events."""

    stage: str = "starting"
    sources_done: int = 0
    sources_total: int | None = None

    def apply(self, event: ProgressEvent) -> None:
        if event.kind == "stage":
            self.stage = str(event.data.get("stage") or self.stage)[:40]
            total = event.data.get("sources")
            if isinstance(total, int):
                self.sources_total = total
        elif event.kind == "fetched":
            self.sources_done += 1
        elif event.kind == "done":
            self.stage = "done"


class TerminalProgress:
    """Redraws one line on a TTY: a bar over sources fetched (as each lands), and the stage."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.state = ProgressState(stage="start")

    def __call__(self, event: ProgressEvent) -> None:
        self.state.apply(event)
        self._draw(finished=event.kind == "done")

    def _draw(self, *, finished: bool) -> None:
        total, done = self.state.sources_total or 0, self.state.sources_done
        fraction = done / total if total else (1.0 if finished else 0.0)
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"\r[{bar}] sources {done}/{total}  stage: {self.state.stage}"
        self.stream.write(line.ljust(self.width + 40) + ("\n" if finished else ""))
        self.stream.flush()
