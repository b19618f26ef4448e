"""api.log (rotated) with a redaction filter: no key or Authorization value is ever written.

Lines are written in batches (as nginx's `access_log … buffer= flush=`): a WARNING or
worse at once with everything before it, an INFO line (one per request) at most
`FLUSH_SECONDS` later. Written one at a time, an access line cost more than the 304 it
logged (two writes, two `stat`s, a seek and three formats per record), which at the
default level made a fleet's polls ~4x slower than at WARNING.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import stat
import sys
import threading
import time
import weakref
from typing import TextIO

from edl_api.engine.indicators import CONTROL_CHARACTERS
from edl_api.settings import Settings

_KEY_RE = re.compile(r"edl[apf]_[0-9A-Za-z]{8,}")
_AUTH_RE = re.compile(
    r"(?i)(authorization|x-api-key|password|token)([\"']?\s*[:=]\s*[\"']?)"
    r"((?:bearer|basic)\s+)?([^\s\"',;]+)"
)


# Characters that end a line for some reader or rewrite what a terminal shows: C0 and C1
# controls (tab included; C1 holds U+0085 NEXT LINE), DEL, the Unicode line and paragraph
# separators, and the bidi controls (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069).
_UNSAFE = re.compile(f"[{CONTROL_CHARACTERS}]")  # the set entries may not hold either
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or f"\\u{ord(char):04x}"


def escape_log(text: str) -> str:
    """`text` on one line that shows as written: a request's path, query, user agent or a
    name cannot forge a log line (`/healthz%0a2026-... FAKE`) or recolour a terminal."""
    return _UNSAFE.sub(_escape_char, text)


class EscapingFormatter(logging.Formatter):
    """Every record is exactly one line: the whole formatted text (message, traceback) is
    escaped, whatever a caller passed in."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        return escape_log(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # One `strftime` a second, not one a line (a busy server logs thousands a second).
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"  # the default `default_msec_format`


class RedactingFilter(logging.Filter):
    """Scrubs API keys, legacy keys and credential-looking values from every record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _KEY_RE.sub(lambda m: m.group(0)[:5] + "***", text)
        return _AUTH_RE.sub(lambda m: m.group(1) + m.group(2) + (m.group(3) or "") + "***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, redacted, so no handler prints the raw text.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


FLUSH_SECONDS = 1.0
_BUFFER_CHARS = 64 * 1024
_batched: weakref.WeakSet[BatchedHandler] = weakref.WeakSet()
_flusher: threading.Thread | None = None


class BatchedHandler(logging.Handler):
    """The one root handler of api.log and stderr: a record is filtered (redacted) and
    formatted once, kept, and written with the lines before it to both, whole lines in
    one write (two processes appending to one api.log never split each other's lines)."""

    def __init__(self, log_file: logging.handlers.RotatingFileHandler, stream: TextIO) -> None:
        super().__init__()
        self._file = log_file  # used for its stream and `doRollover`, never as a handler
        self._stream = stream
        self._lines: list[str] = []
        self._chars = 0
        self._due = 0.0  # a line logged after this is written at once (a quiet server's)
        _batched.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._chars += len(line)
        if (record.levelno >= logging.WARNING or self._chars >= _BUFFER_CHARS
                or time.monotonic() >= self._due):
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # an RLock: `handle` may hold it
            self._due = time.monotonic() + FLUSH_SECONDS
            if not self._lines:
                return
            text = "".join(self._lines)
            self._lines.clear()
            self._chars = 0
            for write in (self._write_file, self._write_stream):
                try:
                    write(text)
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": "log write failed"}))

    def _write_file(self, text: str) -> None:
        stream = self._file.stream
        if stream is None:  # closed
            return
        # The size once per write, with `fstat` (what every process appending to the file
        # wrote); never roll over anything but a regular file (bpo-45401: /dev/null).
        info = os.fstat(stream.fileno())
        if (self._file.maxBytes > 0 and stat.S_ISREG(info.st_mode) and info.st_size
                and info.st_size + len(text.encode("utf-8")) > self._file.maxBytes):
            self._file.doRollover()
            stream = self._file.stream
        if stream is not None:
            stream.write(text)
            stream.flush()

    def _write_stream(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def drop_inherited(self) -> None:
        """In a forked child: the parent's pending lines are the parent's to write."""
        self._lines.clear()
        self._chars = 0

    def close(self) -> None:
        self.flush()
        self._file.close()
        super().close()


def flush_logs() -> None:
    """Write every batched line now (a test reading api.log, a shutdown)."""
    for handler in list(_batched):
        handler.flush()


def _flush_forever() -> None:
    while True:  # a daemon thread: the last lines of a burst, on a server that went quiet
        time.sleep(FLUSH_SECONDS)
        try:
            flush_logs()
        except Exception:  # noqa: S112  # a handler added mid-walk: next time; never die
            continue


def _after_fork_in_child() -> None:
    for handler in list(_batched):
        handler.drop_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _start_flusher() -> None:
    global _flusher
    if _flusher is None or not _flusher.is_alive():
        _flusher = threading.Thread(target=_flush_forever, name="edl-log-flush", daemon=True)
        _flusher.start()


_configured_marker = "_edl_handler"


def configure_logging(settings: Settings) -> None:
    """Idempotent: replaces our handlers, leaves foreign ones alone (pytest's capture)."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _configured_marker, False):
            root.removeHandler(handler)
            handler.close()
    log_file = logging.handlers.RotatingFileHandler(
        settings.log_dir / "api.log", maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
    )
    handler = BatchedHandler(log_file, sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter([secret for secret, _ in settings.legacy_keys()]))
    setattr(handler, _configured_marker, True)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    _start_flusher()
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # `middleware.AccessLog` and the feed fast path write the access line; uvicorn's own
    # would double it (uvicorn logs it whenever the logger has a handler, root's included).
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
