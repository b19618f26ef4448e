"""The engine tests' upstream: tests/fixtures/feeds on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import LoopbackServer, loopback


@pytest.fixture
def feed_server() -> Iterator[LoopbackServer]:
    """Serves tests/fixtures/feeds on 127.0.0.1:<ephemeral>; `routes` add custom paths."""
    with loopback() as server:
        yield server
