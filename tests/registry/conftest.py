"""Fixtures for the registry tests: a real OCI registry (Debian's docker-registry) on loopback."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import oras.client
import pytest
from nats.aio.client import Client as NatsClient

from bus.embedded import EmbeddedNatsServer, free_port
from bus.registry_requests import release as request_release
from bus.subjects import Header, Subjects
from harness.apt import ensure_binary
from harness.errors import AptError
from registry.oci import WASM_CONFIG, WASM_LAYER, compute_digest
from registry.service import RegistryService
from schemas.codec import decode, encode
from schemas.config import RegistrySettings, Settings, WorkerSettings
from schemas.wire import CallToolResult, ErrorReply, PublishRequest, ReleaseReply, ReleaseRequest
from stores import PackageStore
from tests.conftest import start_package_worker
from workers.package_follower import PackageFollower
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService

DOCKER_REGISTRY = "docker-registry"
"""Debian's build of the CNCF distribution registry (``registry serve CONFIG``); package of the same name."""
READY_TIMEOUT_S = 15.0


@pytest.fixture(scope="session")
def docker_registry_bin() -> str:
    """Debian's docker-registry, installed with apt-get when missing (CI runs as root)."""
    try:
        return ensure_binary(DOCKER_REGISTRY, [DOCKER_REGISTRY])
    except AptError as exc:
        pytest.fail(str(exc))


@dataclass
class OciTestRegistry:
    """A running docker-registry on 127.0.0.1, anonymous, its storage under ``root``."""

    port: int
    root: Path
    """The registry's filesystem storage (blobs under ``docker/registry/v2/blobs``)."""
    scratch: Path
    """Where pushes write their files."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def oci(self, target: str) -> str:
        """``oci://127.0.0.1:PORT/<target>``."""
        return f"oci://{self.address}/{target}"

    def push(
        self,
        target: str,
        content: bytes,
        *,
        layer_media_type: str = WASM_LAYER,
        config_media_type: str = WASM_CONFIG,
        annotations: dict[str, str] | None = None,
    ) -> str:
        """Push ``content`` as the one layer of ``REPO:TAG`` with oras; return the manifest digest.

        The defaults are the Wasm OCI artifact layout (config ``application/vnd.wasm.config.v0+json``,
        layer ``application/wasm``), with a config like wkg's.
        """
        work = self.scratch / f"push-{time.monotonic_ns()}"
        work.mkdir()
        layer = work / "component.wasm"
        layer.write_bytes(content)
        config = work / "config.json"
        layer_digests = [compute_digest(content)]
        config.write_text(json.dumps({"architecture": "wasm", "os": "wasip2", "layerDigests": layer_digests}))
        client = oras.client.OrasClient(insecure=True)
        response = client.push(
            f"{self.address}/{target}",
            files=[f"{layer}:{layer_media_type}"],
            manifest_config=f"{config}:{config_media_type}",
            manifest_annotations=annotations,
            disable_path_validation=True,
            quiet=True,
        )
        assert response.status_code == 201, response.text
        return str(response.headers["Docker-Content-Digest"])

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps the blob ``sha256:<hex>``."""
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / "docker" / "registry" / "v2" / "blobs" / algorithm / hexdigest[:2] / hexdigest / "data"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def oci_registry(docker_registry_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciTestRegistry]:
    """``docker-registry serve`` on a random loopback port, no auth, storage in a temp dir."""
    base = tmp_path_factory.mktemp("oci-registry")
    root, scratch = base / "storage", base / "scratch"
    root.mkdir()
    scratch.mkdir()
    port = free_port()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log_path = base / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [docker_registry_bin, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _answers(f"http://127.0.0.1:{port}/v2/"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not come up on port {port}:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield OciTestRegistry(port=port, root=root, scratch=scratch)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


ANNOUNCE_INTERVAL_S = 0.2


@pytest.fixture
def registry_settings() -> RegistrySettings:
    """The deployment's registry settings; a module overrides this fixture to change them."""
    return RegistrySettings()


@dataclass
class Deployment:
    nc: NatsClient
    subjects: Subjects
    store: PackageStore
    registry: RegistryService
    start_worker: Callable[[], Awaitable[tuple[WorkerService, PackageFollower, NatsClient]]]

    async def publish(self, name: str, version: str, wasm: bytes, **fields: object) -> ReleaseReply:
        digest = await self.store.put_artifact(wasm)
        request = PublishRequest(name=name, version=version, digest=digest, **fields)  # type: ignore[arg-type]
        return await request_release(self.nc, self.subjects.registry_release("publish"), encode(request))

    async def release(self, verb: str, name: str, version: str = "", **fields: str) -> ReleaseReply:
        request = ReleaseRequest(name=name, version=version, **fields)
        return await request_release(self.nc, self.subjects.registry_release(verb), encode(request))

    async def call(self, tool: str) -> CallToolResult:
        reply = await self.nc.request(self.subjects.call(tool), b"{}", timeout=10)
        if reply.headers and Header.ERROR in reply.headers:
            error = decode(reply.data, ErrorReply).error
            raise AssertionError(f"typed error {error.code}: {error.message}")
        return decode(reply.data, CallToolResult)

    def offered(self) -> dict[str, str]:
        """Tool → version, as the tools bucket (what gateways list) holds them."""
        assert self.registry.catalogue is not None
        return {name: tool.version for name, tool in self.registry.catalogue.tools.items()}


@pytest.fixture
async def deployment(
    nats_server: EmbeddedNatsServer,
    nc: NatsClient,
    subjects: Subjects,
    engine_host: EngineHost,
    cache_dir: Path,
    registry_settings: RegistrySettings,
) -> AsyncIterator[Deployment]:
    """A registry (with ``registry_settings``), a package store, and workers started on demand."""
    registry = RegistryService(nc, subjects, registry_settings, announce_interval_s=ANNOUNCE_INTERVAL_S)
    await registry.start()
    store = await PackageStore.open(nc, subjects)
    started: list[tuple[WorkerService, PackageFollower, NatsClient]] = []
    settings = Settings(
        cache_dir=cache_dir, worker=WorkerSettings(concurrency=2, announce_interval_s=ANNOUNCE_INTERVAL_S)
    )

    async def start_worker() -> tuple[WorkerService, PackageFollower, NatsClient]:
        started.append(await start_package_worker(nats_server.url, subjects, engine_host, settings))
        return started[-1]

    yield Deployment(nc, subjects, store, registry, start_worker)
    for service, follower, worker_nc in started:
        await follower.stop()
        await service.stop(grace_s=0.5 if worker_nc.is_closed else 1)
        await worker_nc.close()
    await registry.stop()
