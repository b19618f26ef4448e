"""api.log (rotated) with a redaction filter: no key or Authorization value is ever written."""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys

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

    def format(self, record: logging.LogRecord) -> str:
        return escape_log(super().format(record))


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


_configured_marker = "_edl_handler"


def configure_logging(settings: Settings) -> None:
    """Idempotent: replaces our handlers, leaves foreign ones alone (pytest's capture)."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _configured_marker, False):
            root.removeHandler(handler)
            handler.close()
    redactor = RedactingFilter([secret for secret, _ in settings.legacy_keys()])
    formatter = EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(
        settings.log_dir / "api.log", maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
    )
    stream_handler = logging.StreamHandler(sys.stderr)
    for handler in (file_handler, stream_handler):
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        setattr(handler, _configured_marker, True)
        root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # `middleware.AccessLog` and the feed fast path write the access line; uvicorn's own
    # would double it (uvicorn logs it whenever the logger has a handler, root's included).
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
