"""Fixtures for the registry tests: a real OCI registry (Debian's docker-registry) on loopback."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import oras.client
import pytest

from bus.embedded import free_port
from harness.apt import ensure_binary
from harness.errors import AptError
from registry.oci import WASM_CONFIG, WASM_LAYER, compute_digest

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
