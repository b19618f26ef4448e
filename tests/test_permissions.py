"""Deny by default: every route declares who may call it."""

from __future__ import annotations

from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from edl_api.app import create_app
from tests.conftest import make_settings
from tests.helpers import walk_routes

OPEN_DOC_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _permissions(dependant: Dependant) -> set[str]:
    found: set[str] = set()
    call = dependant.call
    if call is not None and hasattr(call, "edl_permission"):
        found.add(call.edl_permission)
    for sub in dependant.dependencies:
        found |= _permissions(sub)
    return found


def test_every_route_declares_a_permission(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, None))
    undeclared, checked = [], 0
    for route, router_deps in walk_routes(app.routes):
        inherited = {d.dependency.edl_permission for d in router_deps
                     if hasattr(d.dependency, "edl_permission")}
        if isinstance(route, APIRoute):
            checked += 1
            if not (_permissions(route.dependant) | inherited):
                undeclared.append(f"{sorted(route.methods)} {route.path}")
        elif getattr(route, "path", None) not in OPEN_DOC_ROUTES:
            undeclared.append(f"non-API route {getattr(route, 'path', route)}")
    assert checked > 15
    assert undeclared == []
