"""`X-EDL-Signature`: how a receiver knows a delivery came from this service, unchanged
and recently.

    X-EDL-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

To verify: split the header on ",", take `t` and `v1`; compute the HMAC-SHA256 of the
bytes `t`, ".", and the raw request body (before any JSON parsing) with the webhook's
secret; compare it to `v1` in constant time; refuse `t` older than a few minutes (a
replayed delivery carries its old `t`, and changing it breaks the signature). A retry is
signed again with a new `t`; `X-EDL-Delivery` (the delivery id) stays the same, so a
receiver can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-EDL-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body,
                   hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, body: bytes, now: float | None = None) -> str:
    """The header value for `body`, signed at `now` (default: the current time)."""
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does (the reference for docs and tests): True for a fresh, valid
    signature of `body`."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), parts.get("v1", ""))
