"""Webhook requests and answers (a secret goes in, never out)."""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from edl_api.alerts.formats import Event, Format
from edl_api.engine.config import check_http_url
from edl_api.schemas import RequestModel, ResponseModel


class WebhookCreate(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "url": "https://hooks.example.com/edl", "events": ["run_failed", "guard_held"],
        "secret": "a-long-random-shared-secret", "format": "json",
    }]})

    url: str = Field(max_length=2048, description="http(s) URL the alerts are POSTed to")
    events: list[Event] = Field(min_length=1, max_length=6)
    secret: str | None = Field(
        default=None, min_length=16, max_length=256,
        description="signs each delivery (X-EDL-Signature); stored encrypted, never shown",
    )
    format: Format = Field(
        default="json", description="json: the event; slack: {\"text\": …} (Slack, Teams)",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if check_http_url(url).fragment:
            raise ValueError("must not have a #fragment")
        return url

    @field_validator("events")
    @classmethod
    def _distinct(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


def display_url(url: str) -> str:
    """The URL as shown back: origin and first path segment. Slack and Teams URLs carry
    their credential in the rest of the path."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}" if segments else "/"
    if len(segments) > 1 or parts.query:
        path += "/…"
    return f"{parts.scheme}://{parts.netloc}{path}"


class WebhookPublic(ResponseModel):
    id: int
    profile_id: int
    url: str = Field(description="origin and first path segment; the rest is not shown")
    events: list[str]
    format: str
    signed: bool = Field(description="deliveries carry X-EDL-Signature (a secret is set)")
    created_at: datetime


class AttemptPublic(ResponseModel):
    at: str
    status: int | None
    error: str | None
    seconds: float


class DeliveryPublic(ResponseModel):
    id: int
    webhook_id: int
    event: str
    state: str = Field(description="pending | delivered | failed")
    attempts: int
    next_attempt_at: datetime | None = Field(description="when pending: the next try")
    last_status: int | None
    last_error: str | None
    attempt_log: list[AttemptPublic]
    payload: dict[str, Any] = Field(description="the event (the json format's body)")
    created_at: datetime
    finished_at: datetime | None
