"""Shared fixtures: a real nats-server per test session, fresh prefixes per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from schemas.config import ComponentSettings
from workers.component import LoadedComponent
from workers.engine import EngineHost


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    """A real nats-server (JetStream on) on a random port, shared by the session."""
    server = EmbeddedNatsServer(state_dir=tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def subjects() -> Subjects:
    """A subject catalogue under a prefix unique to the test, so tests never hear each other."""
    return Subjects(prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[NatsClient]:
    """A client connection to the session's nats-server."""
    client = await connect(nats_server.url, name="test")
    yield client
    await client.close()


TESTKIT_WAT = Path(__file__).resolve().parents[1] / "examples" / "wat" / "testkit.wat"
"""The hand-written WAT component: instantiates in microseconds, has a trap and an endless loop."""


@pytest.fixture(scope="session")
def engine_host() -> Iterator[EngineHost]:
    """One wasmtime engine (with its epoch ticker) for the session, as a worker has."""
    with EngineHost() as host:
        yield host


@pytest.fixture(scope="session")
def kit(engine_host: EngineHost, cache_dir: Path) -> LoadedComponent:
    """The testkit component loaded as a worker loads it; its tools are ``kit_*``."""
    return LoadedComponent.load(engine_host, ComponentSettings(name="kit", path=TESTKIT_WAT), TESTKIT_WAT, cache_dir)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build/compile cache shared by the session (components are built once)."""
    return tmp_path_factory.mktemp("cache")
