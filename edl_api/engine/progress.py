"""A one-line progress bar for `edl-api run-local` on a terminal."""

from __future__ import annotations

from typing import Any, TextIO

STAGES = ("fetch", "rules", "aggregate", "done")


class TerminalProgress:
    """Redraws one line on a TTY: a bar over sources fetched (as each lands), and the stage."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.total = 0
        self.done = 0
        self.stage = "start"

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "stage":
            self.stage = str(data.get("stage", self.stage))
            self.total = int(data.get("sources", self.total) or self.total)
        elif event == "fetched":
            self.done += 1
        elif event == "done":
            self.stage = "done"
        self._draw(finished=event == "done")

    def _draw(self, *, finished: bool) -> None:
        fraction = self.done / self.total if self.total else (1.0 if finished else 0.0)
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"\r[{bar}] sources {self.done}/{self.total}  stage: {self.stage}"
        self.stream.write(line.ljust(self.width + 40) + ("\n" if finished else ""))
        self.stream.flush()
