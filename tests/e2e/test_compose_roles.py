"""compose.yaml's roles, run for real without Docker: the registry, two workers and the gateway
with the configs in deploy/toolbus/, against three nats-servers clustered on loopback with the
least-privilege users of ``toolbus nats-config --cluster-name … --passwords-from-env``.

Only what loopback needs differs from compose: the NATS URLs (``--nats``), the gateway's port
and host, and the API key's hash (the committed one matches no key).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bus.connection import connect
from bus.embedded import free_port, nats_server_binary
from bus.errors import BusUnavailable
from bus.security import ROLES, Cluster, env_passwords, password_variable, server_config
from bus.subjects import Subjects
from harness.processes import Children
from schemas.config import NatsSettings
from tests.conftest import eventually

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[2] / "deploy" / "toolbus"
TOOLBUS = str(Path(sys.executable).parent / "toolbus")
"""The venv's ``toolbus`` console script, as in the image."""
PLACEHOLDER_HASH = "0" * 64
READY_TIMEOUT_S = 240.0
"""Workers may build and compile the example components first (seconds each, minutes on a busy CI)."""


class Processes(Children):
    """Child processes of one test (``harness.processes.Children``: each logging to its own file in
    ``directory``, stopped last-started first), all given the variables in ``env``."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        super().__init__(directory)
        self.env = env

    def start(self, name: str, argv: list[str], **env: str) -> None:
        self.spawn(name, argv, env={**self.env, **env})


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    secrets_env = {password_variable(role): secrets.token_hex(16) for role in ROLES}
    with Processes(tmp_path, {**os.environ, **secrets_env, "TOOLBUS_PRINCIPAL_KEY": secrets.token_hex(32)}) as running:
        yield running


async def test_the_compose_roles_serve_an_authenticated_call_on_a_secured_r3_cluster(
    processes: Processes, tmp_path: Path
) -> None:
    client_ports, route_ports = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    routes = tuple(f"nats://127.0.0.1:{port}" for port in route_ports)
    for i, (port, route_port) in enumerate(zip(client_ports, route_ports, strict=True)):
        config = tmp_path / f"nats-{i + 1}.conf"
        cluster = Cluster("toolbus", routes, route_port)
        store_dir = tmp_path / f"js-{i + 1}"
        config.write_text(
            server_config(Subjects("toolbus"), env_passwords(), store_dir=store_dir, port=port, cluster=cluster)
        )
        processes.start(
            f"nats-{i + 1}", [str(nats_server_binary()), "-c", str(config), "--server_name", f"nats-{i + 1}"]
        )
    nats_url = ",".join(f"nats://127.0.0.1:{port}" for port in client_ports)

    def password(role: str) -> str:
        return processes.env[password_variable(role)]

    api_key = secrets.token_hex(16)
    gateway_config = tmp_path / "gateway.toml"
    committed = (CONFIGS / "gateway.toml").read_text(encoding="utf-8")
    assert PLACEHOLDER_HASH in committed
    hashed = committed.replace(PLACEHOLDER_HASH, hashlib.sha256(api_key.encode()).hexdigest())
    # Its [[components]] sources are relative to deploy/toolbus/; this copy lives elsewhere.
    gateway_config.write_text(hashed.replace('"../../examples/', f'"{CONFIGS.parents[1] / "examples"}/'))
    port = free_port()
    for name, role, config, extra in [
        ("registry", "registry", CONFIGS / "registry.toml", []),
        ("worker-1", "worker", CONFIGS / "worker.toml", []),
        ("worker-2", "worker", CONFIGS / "worker.toml", []),
        ("gateway", "gateway", gateway_config, ["--host", "127.0.0.1", "--port", str(port)]),
    ]:
        argv = [TOOLBUS, role, "--config", str(config), "--nats", nats_url, *extra]
        processes.start(name, argv, TOOLBUS_NATS_PASSWORD=password(role))

    base = f"http://127.0.0.1:{port}"
    async with httpx2.AsyncClient(timeout=5) as http:

        async def ready() -> bool:
            try:
                return (await http.get(f"{base}/readyz")).status_code == 200
            except httpx2.TransportError:
                return False

        await eventually(
            ready, timeout_s=READY_TIMEOUT_S, interval_s=0.5, what=f"the gateway never got ready: {tmp_path}"
        )
        refused = await http.post(
            f"{base}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert refused.status_code == 401
        assert "resource_metadata=" in refused.headers["www-authenticate"]

    async with httpx2.AsyncClient(headers={"X-API-Key": api_key}, timeout=30) as http:
        async with Client(streamable_http_client(f"{base}/mcp", http_client=http), mode="auto") as mcp:  # type: ignore[arg-type]

            async def calc_listed() -> bool:
                return "calc_add" in {tool.name for tool in (await mcp.list_tools()).tools}

            await eventually(calc_listed, timeout_s=READY_TIMEOUT_S, interval_s=1, what="calc_add was never listed")
            result = await mcp.call_tool("calc_add", {"a": 2, "b": 3})
            assert not result.is_error
            assert [c.text for c in result.content if c.type == "text"] == ["5"]
            # Larger than a NATS message both ways: claim checks through the Object Store under the
            # generated permissions, the principal signed over the real arguments (bus.payloads).
            name = "bolt " * (400 * 1024)  # 2 MiB
            item = {"name": name, "category": "part", "price": 0.5, "tags": []}
            described = await mcp.call_tool("inventory_catalog_describe", {"item": item})
            assert not described.is_error, described.content
            assert [c.text for c in described.content if c.type == "text"] == [f"{name} (part, 0.50 EUR)"]

    # The registry's compose health check passes, as the registry's own user.
    health = await asyncio.to_thread(
        subprocess.run,
        [TOOLBUS, "tools", "--config", str(CONFIGS / "registry.toml"), "--nats", nats_url],
        env={**processes.env, "TOOLBUS_NATS_PASSWORD": password("registry")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert health.returncode == 0 and "calc_add" in health.stdout, health.stderr
    # What the roles created is R3: a leader and two peers.
    operator = NatsSettings(url=nats_url, user="operator", password=password("operator"))
    nc = await connect(operator, name="operator", allow_reconnect=False)
    try:
        info = await nc.jetstream().stream_info(f"KV_{Subjects('toolbus').tools_bucket}")
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()
    # The deploy config lets nobody else in: an anonymous client is refused by every node.
    for node_port in client_ports:
        with pytest.raises(BusUnavailable, match=r"[Aa]uthorization"):
            anonymous = NatsSettings(url=f"nats://127.0.0.1:{node_port}", password=None)
            await connect(anonymous, name="anonymous", allow_reconnect=False)
