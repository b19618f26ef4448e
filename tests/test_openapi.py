"""The OpenAPI document is complete enough to drive a client from /docs alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from edl_api.app import create_app
from tests.conftest import make_settings

TEXT_ROUTES = ("/edl/", "/logs", "/artifacts/", "/metrics")  # text/plain bodies, by design


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    schema: dict[str, Any] = create_app(make_settings(tmp, None)).openapi()
    return schema


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete", "head")
    ]


def test_every_operation_is_documented(spec: dict[str, Any]) -> None:
    problems = []
    for method, path, op in _operations(spec):
        where = f"{method} {path}"
        if not op.get("summary"):
            problems.append(f"{where}: no summary")
        if not op.get("tags"):
            problems.append(f"{where}: no tags")
        ok = [code for code in op["responses"] if code.startswith("2") or code == "304"]
        if not ok:
            problems.append(f"{where}: no success response")
        elif not any(t in path for t in TEXT_ROUTES) and method != "HEAD" and ok[0] != "204":
            content = op["responses"][ok[0]].get("content", {})
            # JSON or a JSON-based media type (TAXII's application/taxii+json;version=2.1)
            schema = next((c.get("schema", {}) for media, c in content.items()
                           if media.split(";")[0].endswith(("/json", "+json"))), {})
            if not schema or schema == {}:
                problems.append(f"{where}: untyped response")
        if path not in ("/healthz", "/readyz"):
            for code in ("401", "403"):
                if code not in op["responses"]:
                    problems.append(f"{where}: {code} not documented")
        body = op.get("requestBody")
        if body is not None:
            ref = body["content"]["application/json"]["schema"].get("$ref", "")
            model = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
            if not model.get("examples"):
                problems.append(f"{where}: request body has no example")
    assert problems == []


def test_operation_ids_are_unique(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert len(ids) == len(set(ids))


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text.lower()
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "EDL platform"
