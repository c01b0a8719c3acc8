"""Fixtures shared by the worker tests: the example components, built for real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from bus.principal import PrincipalSigner
from bus.subjects import Subjects
from harness.apt import ensure_binary
from harness.errors import AptError
from schemas.config import WorkerSettings
from workers.answers import FinishedCall
from workers.routes import CallableComponent
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService
from workers.toolchains.clang import CLANG, DEBIAN_PACKAGES, build_c_command
from workers.toolchains.componentize import build_component

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


# Session-scoped and built into the session's shared `cache_dir` (tests/conftest.py), so each
# example is built once per session (~6 s) whichever test asks first.
@pytest.fixture(scope="session")
def calc_wasm(cache_dir: Path) -> Path:
    """The calc example, built with componentize-py."""
    return build_component(EXAMPLES_DIR / "calc", "calc", cache_dir)


@pytest.fixture(scope="session")
def inventory_wasm(cache_dir: Path) -> Path:
    """The inventory example, built with componentize-py."""
    return build_component(EXAMPLES_DIR / "inventory", "inventory", cache_dir)


@pytest.fixture(scope="session")
def conformance_wasm(cache_dir: Path) -> Path:
    """The conformance example (the MCP suite's tools, using toolbus:mcp), built with componentize-py."""
    return build_component(EXAMPLES_DIR / "conformance", "test", cache_dir)


@pytest.fixture(scope="session")
def c_toolchain() -> str:
    """Debian's clang-19 with wasi-libc, installed with apt-get when missing (CI runs as root)."""
    try:
        return ensure_binary(CLANG, DEBIAN_PACKAGES)
    except AptError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def wordcount_wasm(c_toolchain: str, cache_dir: Path) -> Path:
    """The wordcount example (C), built with clang-19 and wasi-libc."""
    return build_c_command(EXAMPLES_DIR / "wordcount", cache_dir)


PRINCIPAL_KEY = "worker-test-principal-key"
"""The deployment's principal key in the signed-worker tests (the test plays the gateway holding it)."""


@dataclass
class SignedWorker:
    """A started worker that checks principal signatures, with the key's signer and what it served."""

    service: WorkerService
    signer: PrincipalSigner
    seen: list[FinishedCall]
    """Every answered call, told to the observers as its reply is queued (before the caller has it)."""


@pytest.fixture
async def signed_worker(nc: NatsClient, subjects: Subjects, kit: LoadedComponent) -> AsyncIterator[SignedWorker]:
    """A worker serving the testkit that believes a call's principal only when signed with ``PRINCIPAL_KEY``."""
    signer = PrincipalSigner(PRINCIPAL_KEY)
    service = WorkerService(nc, subjects, WorkerSettings(concurrency=1), [kit], principal_signer=signer)
    seen: list[FinishedCall] = []
    service.observers.append(seen.append)
    await service.start()
    try:
        yield SignedWorker(service, signer, seen)
    finally:
        await service.stop(grace_s=1)


async def start_worker(
    nc: NatsClient, subjects: Subjects, *components: CallableComponent, **settings: int
) -> WorkerService:
    """A worker serving ``components`` on the test's deployment, started (stop it yourself)."""
    service = WorkerService(nc, subjects, WorkerSettings(**settings), list(components))
    await service.start()
    return service


@pytest.fixture
def served(kit: LoadedComponent) -> list[CallableComponent]:
    """What the ``worker`` fixture serves: the testkit. A module overrides it to serve more."""
    return [kit]


@pytest.fixture
async def worker(nc: NatsClient, subjects: Subjects, served: list[CallableComponent]) -> AsyncIterator[WorkerService]:
    """A worker serving ``served`` with two guest threads, drained after the test."""
    service = await start_worker(nc, subjects, *served, concurrency=2)
    yield service
    await service.stop(grace_s=1)
