"""Deny by default: every route declares who may call it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from edl_api.app import create_app
from tests.conftest import make_settings

OPEN_DOC_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _permissions(dependant: Dependant) -> set[str]:
    found: set[str] = set()
    call = dependant.call
    if call is not None and hasattr(call, "edl_permission"):
        found.add(call.edl_permission)
    for sub in dependant.dependencies:
        found |= _permissions(sub)
    return found


def _walk(routes: Sequence[Any], inherited: set[str]) -> Iterator[tuple[Any, set[str]]]:
    """Yield (route, permissions from enclosing routers), through lazily included routers."""
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is None:
            yield route, inherited
            continue
        deps = list(router.dependencies)
        context = getattr(route, "include_context", None)
        deps += list(getattr(context, "dependencies", []))
        marks = {
            d.dependency.edl_permission for d in deps if hasattr(d.dependency, "edl_permission")
        }
        yield from _walk(router.routes, inherited | marks)


def test_every_route_declares_a_permission(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, None))
    undeclared, checked = [], 0
    for route, inherited in _walk(app.routes, set()):
        if isinstance(route, APIRoute):
            checked += 1
            if not (_permissions(route.dependant) | inherited):
                undeclared.append(f"{sorted(route.methods)} {route.path}")
        elif getattr(route, "path", None) not in OPEN_DOC_ROUTES:
            undeclared.append(f"non-API route {getattr(route, 'path', route)}")
    assert checked > 15
    assert undeclared == []
