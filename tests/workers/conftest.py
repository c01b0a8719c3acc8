"""Fixtures shared by the worker tests: the example components, built for real."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from bus.subjects import Subjects
from schemas.config import WorkerSettings
from workers.build import build_component
from workers.c_build import CLANG, DEBIAN_PACKAGES, build_c_command
from workers.component import LoadedComponent
from workers.service import WorkerService

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


APT_TIMEOUT_S = 600
"""apt-get update plus installing clang and wasi-libc takes ~15 s with a warm mirror."""


@pytest.fixture(scope="session")
def c_toolchain() -> str:
    """Debian's clang-19 with wasi-libc, installed with apt-get when missing (CI runs as root)."""
    found = shutil.which(CLANG)
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_PACKAGES]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(install, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env, check=False)
    if done.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=APT_TIMEOUT_S, env=env, check=False)
        done = subprocess.run(install, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env, check=False)
    found = shutil.which(CLANG)
    if found is None:
        pytest.fail(f"could not install {' '.join(DEBIAN_PACKAGES)} with apt-get:\n{done.stderr[-2000:]}")
    return found


@pytest.fixture(scope="session")
def wordcount_wasm(c_toolchain: str, cache_dir: Path) -> Path:
    """The wordcount example (C), built with clang-19 and wasi-libc."""
    return build_c_command(EXAMPLES_DIR / "wordcount", cache_dir)


async def start_worker(nc: NatsClient, subjects: Subjects, kit: LoadedComponent, **settings: int) -> WorkerService:
    """A worker serving ``kit`` on the test's deployment, started (stop it yourself)."""
    service = WorkerService(nc, subjects, WorkerSettings(**settings), [kit])
    await service.start()
    return service


@pytest.fixture
async def worker(nc: NatsClient, subjects: Subjects, kit: LoadedComponent) -> AsyncIterator[WorkerService]:
    """A worker serving the testkit with two guest threads, drained after the test."""
    service = await start_worker(nc, subjects, kit, concurrency=2)
    yield service
    await service.stop(grace_s=1)
