"""Shared engine test helpers: fixture paths and a local-only HTTP stub server."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"

Handler = Callable[[http.server.BaseHTTPRequestHandler], bool]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Handler]
    requests: list[tuple[str, dict[str, str]]]


class _RequestHandler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.requests.append((self.path, dict(self.headers.items())))
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is not None and route(self):
            return
        super().do_GET()


@pytest.fixture
def feed_server() -> Iterator[_Server]:
    """Serves tests/fixtures/feeds on 127.0.0.1:<ephemeral>; `routes` add custom paths."""
    handler = functools.partial(_RequestHandler, directory=str(FEEDS))
    server = _Server(("127.0.0.1", 0), handler)
    server.routes = {}
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
