"""A config sent as the YAML itself (`Content-Type: application/yaml`), not wrapped in JSON.

The name and refresh interval come from query parameters or from a header comment among
the document's first lines (docs/config.md, "Uploading YAML"):

    # edl: name=c2-block refresh_interval_minutes=60

Query parameters win over the comment. The route class turns such a request into the JSON
body the route already validates, so both forms share one model, one set of rules and one
OpenAPI schema; the text is stored as sent (line numbers in errors are the operator's own).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from edl_api.errors import AppError, Unprocessable

YAML_TYPES: tuple[str, ...] = ("application/yaml", "text/yaml", "application/x-yaml")
ACCEPTED = "application/yaml (the YAML itself) or application/json ({name, yaml, ...})"
HEADER_KEYS: tuple[str, ...] = ("name", "refresh_interval_minutes")
OFF = "off"  # `refresh_interval_minutes=off`: no scheduled refresh

_HEADER = re.compile(r"^#\s*edl:(?P<pairs>.*)$")
_PAIR = re.compile(r'\s*(?P<key>[A-Za-z_]+)=(?P<value>"(?:[^"\\\n]|\\.)*"|[^\s"]+)')
_HEADER_LINES = 20  # the comment must be among the first lines, before any content


class UnsupportedMediaType(AppError):
    code = "unsupported_media_type"
    status_code = 415


class InvalidHeader(Unprocessable):
    code = "invalid_config"


@dataclass
class Header:
    """The `# edl:` comment: its line (1-based, None: none) and its raw values."""

    line: int | None = None
    values: dict[str, str] = field(default_factory=dict)


def _problem(line: int | None, field_name: str, message: str) -> list[dict[str, Any]]:
    return [{"line": line, "field": field_name, "message": message}]


def read_header(text: str) -> Header:
    for index, line in enumerate(text.splitlines()[:_HEADER_LINES]):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break  # content started: a later `# edl:` is an ordinary comment
        match = _HEADER.match(stripped)
        if match is None:
            continue
        values: dict[str, str] = {}
        rest = match.group("pairs")
        for pair in _PAIR.finditer(rest):
            key, raw = pair.group("key"), pair.group("value")
            if key not in HEADER_KEYS:
                raise InvalidHeader(_problem(
                    index + 1, "", f"`# edl:` comment: unknown key {key!r}; the keys are "
                    + ", ".join(HEADER_KEYS) + " (e.g. `# edl: name=c2 refresh_interval_"
                    "minutes=60`)"
                ))
            values[key] = json.loads(raw) if raw.startswith('"') else raw
        leftover = _PAIR.sub("", rest).strip()
        if leftover:
            raise InvalidHeader(_problem(
                index + 1, "", f"`# edl:` comment: cannot read {leftover[:40]!r}; write "
                'key=value pairs, quoting a value with spaces: name="c2 block"'
            ))
        return Header(index + 1, values)
    return Header()


def parse_interval(raw: str, where: str, line: int | None = None) -> float | None:
    if raw.lower() in (OFF, "none", "null"):
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidHeader(_problem(
            line, "refresh_interval_minutes",
            f"{where}: {raw[:40]!r} is not a number of minutes (or `off`)",
        )) from None


def _render(value: str) -> str:
    return value if re.fullmatch(r'[^\s"]+', value) else json.dumps(value)


def sync_header(text: str, name: str, interval: float | None) -> str:
    """Keep a `# edl:` comment true to the config it is stored in (same line count)."""
    header = read_header(text)
    if header.line is None:
        return text
    current = {
        "name": name, "refresh_interval_minutes": OFF if interval is None else f"{interval:g}"
    }
    pairs = " ".join(f"{k}={_render(current[k])}" for k in HEADER_KEYS if k in header.values)
    lines = text.split("\n")
    old = lines[header.line - 1]
    lines[header.line - 1] = f"{old[: len(old) - len(old.lstrip())]}# edl: {pairs}"
    return "\n".join(lines)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def yaml_payload(text: str, query: dict[str, str], *, name_required: bool) -> dict[str, Any]:
    """The JSON body equivalent of a YAML upload."""
    header = read_header(text)
    payload: dict[str, Any] = {"yaml": text}
    name = query.get("name", header.values.get("name"))
    if name is not None:
        payload["name"] = name
    elif name_required:
        raise Unprocessable(
            "the config needs a name: add ?name=NAME to the URL, or a first line "
            "`# edl: name=NAME` to the YAML (docs/config.md, \"Uploading YAML\")",
            code="name_required",
        )
    if "refresh_interval_minutes" in query:
        payload["refresh_interval_minutes"] = parse_interval(
            query["refresh_interval_minutes"], "query parameter refresh_interval_minutes"
        )
    elif "refresh_interval_minutes" in header.values:
        payload["refresh_interval_minutes"] = parse_interval(
            header.values["refresh_interval_minutes"], "`# edl:` comment", header.line
        )
    return payload


async def as_json_request(request: Request) -> Request:
    """The request FastAPI validates: a YAML body becomes its JSON equivalent; any other
    type but JSON is a 415 that names the accepted ones."""
    media = _media_type(request)
    given = [k for k in HEADER_KEYS if k in request.query_params]
    if media in YAML_TYPES:
        raw = await request.body()
        try:
            text = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise InvalidHeader(_problem(None, "", "the YAML body must be UTF-8 text")) from None
        if not text.strip():
            raise InvalidHeader(_problem(1, "", "the YAML body is empty"))
        payload = yaml_payload(
            text, {k: request.query_params[k] for k in given},
            name_required=request.method == "POST",
        )
        body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in request.scope["headers"]
                   if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return Request({**request.scope, "headers": headers}, receive)
    if given:
        raise Unprocessable(
            f"query parameter {given[0]} goes with a YAML body (Content-Type: "
            f"application/yaml); in a JSON body put {given[0]} in the object",
            code="validation_error",
        )
    if media == "application/json" or media.endswith("+json"):
        return request
    if not media and (await request.body()).lstrip()[:1] in (b"{", b""):
        return request  # FastAPI reads a body without a type as JSON
    raise UnsupportedMediaType(
        f"Content-Type {media or '(none)'} is not accepted here: send {ACCEPTED} "
        "(curl: -H 'Content-Type: application/yaml' --data-binary @config.yaml)"
    )


class ConfigBodyRoute(APIRoute):
    """A route whose body may be the config's YAML itself (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(await as_json_request(request))

        return route


def openapi_yaml_body(example: str) -> dict[str, Any]:
    """`openapi_extra` of such a route: the YAML body types and the two query parameters."""
    schema = {"type": "string", "description": "the pipeline config itself (docs/config.md)"}
    return {
        "requestBody": {
            "content": {media: {"schema": schema, "example": example} for media in YAML_TYPES}
        },
        "parameters": [
            {
                "name": "name", "in": "query", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": "with a YAML body: the config's name (else `# edl: name=…` "
                "in the YAML's first lines); not with JSON",
            },
            {
                "name": "refresh_interval_minutes", "in": "query", "required": False,
                "schema": {"type": "string", "examples": ["60", "off"]},
                "description": "with a YAML body: minutes between scheduled runs, or `off` "
                "(else `# edl: refresh_interval_minutes=…`); not with JSON",
            },
        ],
    }
