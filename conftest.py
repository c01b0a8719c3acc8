"""Fixtures shared by both test trees, tests/ and bench/tests/: a real nats-server per session.

Here, in their common ancestor, because pytest hands a conftest's fixtures only to the tests below it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bus.embedded import EmbeddedNatsServer


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    """A real nats-server (JetStream on) on a random port, shared by the session."""
    server = EmbeddedNatsServer(state_dir=tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()
