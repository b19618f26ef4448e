"""The events a webhook can take and the bodies it is sent.

- `json`: the event itself, `{event, profile_id, pipeline_id?, run_id?, device_id?,
  summary, detail, at}`.
- `slack`: `{"text": "..."}`. Slack incoming webhooks take a JSON body whose `text` is the
  message ("Sending messages using incoming webhooks", docs.slack.dev, 2025:
  `curl -X POST -H 'Content-type: application/json' --data '{"text":"Hello, World!"}'`).
  Microsoft Teams' Office 365 connector incoming webhooks take the same minimal body
  ("Create and send messages", learn.microsoft.com/microsoftteams/platform/
  webhooks-and-connectors/how-to/connectors-using); Teams *Workflows* webhooks, which
  replace those connectors, take Adaptive Cards only and are not supported here.
"""

from __future__ import annotations

import json
from typing import Any, Literal

EVENTS: tuple[str, ...] = (
    "run_failed", "guard_held", "source_failing", "feed_stale", "device_stale",
    "capacity_warning",
)
Event = Literal[
    "run_failed", "guard_held", "source_failing", "feed_stale", "device_stale",
    "capacity_warning",
]
Format = Literal["json", "slack"]
FORMATS: tuple[str, ...] = ("json", "slack")
DETAIL_MAX_CHARS = 2000
SLACK_PREFIX = "EDL alert"


def body(fmt: str, payload: dict[str, Any]) -> bytes:
    """The bytes POSTed for `payload` (the generic event) in the webhook's format."""
    if fmt == "slack":
        text = f"*{SLACK_PREFIX} ({payload.get('event')})*: {payload.get('summary', '')}"
        if payload.get("detail"):
            text += f"\n{payload['detail']}"
        return json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def short(text: str, limit: int = DETAIL_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
