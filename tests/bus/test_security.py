"""NATS security against a real nats-server configured by ``bus.security``: each role connects
with its own user and can do its job; a worker cannot publish registry events or listen where
it has no business; an anonymous client cannot even connect, so it cannot call a tool."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from bus.connection import connect, inbox_prefix
from bus.embedded import free_port, nats_server_binary
from bus.errors import BusUnavailable
from bus.reply_mux import ReplyMux
from bus.security import ROLES, Cluster, env_passwords, new_passwords, password_variable, server_config
from bus.subjects import Subjects
from gateway.audit_trail import AuditTrail
from gateway.ratelimit import RateLimiter
from registry.service import RegistryService
from schemas.codec import decode
from schemas.config import AuditSettings, NatsSettings, RateLimit, RateLimitSettings, RegistrySettings, TasksSettings
from schemas.wire import CallToolResult
from stores import TaskStore
from tests.bus.secure_nats import SecureServer, launch, permission_errors, secure_nats, stop
from tests.conftest import TEST_ANNOUNCE_INTERVAL_S, eventually, start_task_worker, task_reaches, toolbus
from workers.sandbox.component import LoadedComponent

SUBJECTS = Subjects("secure")


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    with secure_nats(tmp_path_factory.mktemp("secure-nats"), SUBJECTS) as server:
        yield server


@dataclass
class Roles:
    registry: NatsClient
    worker: NatsClient
    gateway: NatsClient


@pytest.fixture
async def system(secure_server: SecureServer, kit: LoadedComponent) -> AsyncIterator[Roles]:
    registry_nc = await connect(secure_server.as_role("registry"), name="registry")
    registry = RegistryService(registry_nc, SUBJECTS, RegistrySettings(), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S)
    await registry.start()
    worker_nc = await connect(secure_server.as_role("worker"), name="worker")
    worker = await start_task_worker(worker_nc, SUBJECTS, [kit], TasksSettings())
    gateway_nc = await connect(secure_server.as_role("gateway"), name="gateway")
    yield Roles(registry_nc, worker_nc, gateway_nc)
    await worker.stop()
    await registry.stop()
    for nc in (gateway_nc, worker_nc, registry_nc):
        await nc.close()


async def test_each_role_does_its_job_with_its_own_user(system: Roles) -> None:
    reply = await system.gateway.request(SUBJECTS.call("kit_add"), b'{"a":2,"b":3}', timeout=5)
    assert decode(reply.data, CallToolResult).structured_content == 5
    # Tasks exercise JetStream for every role: the gateway submits, the worker runs and records.
    store = await TaskStore.open(system.gateway, SUBJECTS, TasksSettings())
    record = await store.submit("kit_add", {"a": 20, "b": 22}, principal="p")
    never = "the task never completed under least-privilege users"
    await task_reaches(store, record.task_id, "completed", timeout_s=20, what=never)
    result = await store.result(record.task_id)
    assert result is not None and decode(result, CallToolResult).structured_content == 42


async def violations(secure_server: SecureServer, role: str, act: str, subject: str) -> list[str]:
    """The permission errors the server reports when ``role`` publishes to or subscribes on ``subject``."""
    publish, subscribe = ([subject], []) if act == "publish" else ([], [subject])
    return await permission_errors(secure_server, role, publish, subscribe)


@pytest.mark.parametrize(
    ("act", "subject"),
    [
        ("publish", SUBJECTS.event("published")),  # forge a registry event
        ("publish", SUBJECTS.registry_release("publish")),  # publish a component
        ("subscribe", SUBJECTS.registry_release("publish")),  # listen to release requests
        ("subscribe", SUBJECTS.events_any),  # read registry events it does not need
        ("subscribe", SUBJECTS.task_request("submit")),  # take task submissions
        ("publish", f"$KV.{SUBJECTS.tools_bucket}.forged"),  # write the catalogue
    ],
)
async def test_a_worker_cannot_step_outside_its_role(secure_server: SecureServer, act: str, subject: str) -> None:
    found = await violations(secure_server, "worker", act, subject)
    assert found, f"a worker could {act} {subject}"
    assert subject.lower() in found[0].lower()  # nats-py lower-cases the server's error


async def test_a_gateway_cannot_take_calls(secure_server: SecureServer) -> None:
    assert await violations(secure_server, "gateway", "subscribe", SUBJECTS.call("kit_add"))


async def test_an_anonymous_client_cannot_connect_so_cannot_call_a_tool(secure_server: SecureServer) -> None:
    with pytest.raises(BusUnavailable, match=r"[Aa]uthorization"):
        await connect(NatsSettings(url=secure_server.url, password=None), name="anonymous", allow_reconnect=False)
    with pytest.raises(BusUnavailable, match=r"[Aa]uthorization"):
        wrong = NatsSettings(url=secure_server.url, user="worker", password="not-the-password")
        await connect(wrong, name="impostor", allow_reconnect=False)


async def test_a_cluster_from_the_clustered_config_keeps_r3_buckets_under_the_role_users(tmp_path: Path) -> None:
    # Three nodes on loopback, each with its own route port, so each gets its own config; the
    # routes list is the same everywhere and names every node (a node ignores its own).
    passwords = new_passwords()
    client_ports = [free_port() for _ in range(3)]
    route_ports = [free_port() for _ in range(3)]
    routes = tuple(f"nats://127.0.0.1:{port}" for port in route_ports)
    nodes = []
    try:
        for i, (port, route_port) in enumerate(zip(client_ports, route_ports, strict=True)):
            config = tmp_path / f"node-{i}.conf"
            cluster = Cluster("secure", routes, route_port)
            store_dir = tmp_path / f"js-{i}"
            config.write_text(server_config(SUBJECTS, passwords, store_dir=store_dir, port=port, cluster=cluster))
            nodes.append(launch(config, port, "--server_name", f"secure-{i}"))
        as_role = {
            role: NatsSettings(
                url=f"nats://127.0.0.1:{port}", prefix=SUBJECTS.prefix, user=role, password=passwords[role]
            )
            for role, port in (("registry", client_ports[0]), ("gateway", client_ports[2]))
        }
        registry = await connect(as_role["registry"], name="registry")
        gateway = await connect(as_role["gateway"], name="gateway")
        try:
            js = registry.jetstream()

            async def r3_bucket() -> KeyValue | None:
                try:  # refused until the cluster has elected its JetStream meta leader
                    return await js.create_key_value(bucket=SUBJECTS.tools_bucket, replicas=3)
                except (nats.errors.Error, TimeoutError):
                    return None

            kv = await eventually(r3_bucket, timeout_s=60, interval_s=0.5, what="the cluster never made an R3 bucket")
            info = await js.stream_info(f"KV_{SUBJECTS.tools_bucket}")
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # a leader and two peers
            await kv.put("calc_add", b"record")
            # The gateway, on another node and with its own user, reads what the registry wrote.
            read = await gateway.jetstream().key_value(SUBJECTS.tools_bucket)
            assert (await read.get("calc_add")).value == b"record"
        finally:
            await gateway.close()
            await registry.close()
    finally:
        for node in reversed(nodes):
            stop(node)


def test_a_shared_config_reads_each_password_from_the_environment(tmp_path: Path) -> None:
    config = server_config(SUBJECTS, env_passwords(), store_dir=tmp_path / "js", http_port=8222)
    for role in ROLES:
        assert f'"password": ${password_variable(role)},' in config  # bare: nats-server resolves it
    path = tmp_path / "nats.conf"
    path.write_text(config)
    argv = [str(nats_server_binary()), "-t", "-c", str(path)]
    variables = {password_variable(role): "not-a-secret" for role in ROLES}
    accepted = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=variables, check=False)
    assert accepted.returncode == 0, accepted.stderr
    variables.pop(password_variable("gateway"))
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=variables, check=False)
    assert refused.returncode != 0 and password_variable("gateway") in refused.stderr


def test_nats_config_wants_a_cluster_name_and_routes_together() -> None:
    result = toolbus("nats-config", "--route", "nats://nats-1:6222")
    assert result.returncode == 2
    assert "--cluster-name" in result.stderr and "--route" in result.stderr
    clustered = toolbus("nats-config", "--cluster-name", "c", "--route", "nats://a:6222", "--passwords-from-env")
    assert clustered.returncode == 0
    assert '"routes": [\n    "nats://a:6222"\n  ]' in clustered.stdout
    assert "$WORKER_NATS_PASSWORD" in clustered.stderr  # where each role's password comes from


@pytest.mark.parametrize("subject", [SUBJECTS.audit_call("kit_add"), SUBJECTS.audit_auth("missing_token")])
async def test_a_worker_cannot_publish_audit_events(secure_server: SecureServer, subject: str) -> None:
    found = await violations(secure_server, "worker", "publish", subject)
    assert found, f"a worker could forge the audit event {subject}"
    assert subject.lower() in found[0].lower()


async def test_a_gateway_audits_and_keeps_rate_limits_with_its_own_user(system: Roles) -> None:
    trail = AuditTrail(system.gateway, SUBJECTS, AuditSettings())
    trail.start()
    trail.auth_failure("missing_token", status=401, remote="127.0.0.1:1")
    await trail.stop()
    assert trail.published == 1, "the gateway could not publish to the audit stream"
    limiter = await RateLimiter.open(system.gateway, SUBJECTS, RateLimitSettings(per_tool=RateLimit(requests=1)))
    assert await limiter.check("p", "kit_add") is None
    assert await limiter.check("p", "kit_add") is not None
    assert limiter.store_failures == 0, "the gateway could not use the rate-limit bucket"


@pytest.mark.parametrize(
    ("role", "act"),
    [("operator", "publish"), ("worker", "publish"), ("registry", "publish"), ("gateway", "subscribe")],
)
async def test_only_gateways_answer_a_guests_question(secure_server: SecureServer, role: str, act: str) -> None:
    # A suspended guest is resumed only by a gateway (signed for the call's principal besides):
    # no plain NATS user, no other worker, no registry can answer it, and a gateway cannot take resumes.
    subject = SUBJECTS.resume("some-worker")
    found = await violations(secure_server, role, act, subject)
    assert found, f"a {role} could {act} {subject}"


@pytest.mark.parametrize("role", ["worker", "registry", "operator"])
async def test_no_other_role_can_forge_a_reply_into_a_gateways_calls(
    secure_server: SecureServer, system: Roles, role: str
) -> None:
    # The gateway's calls share one reply subscription whose tokens are a counter (bus.reply_mux):
    # what keeps forged answers out is that no other role may publish into a gateway's inbox
    # except as the one reply to a request it received (allow_responses).
    await eventually(lambda: system.worker.is_connected)
    mux = ReplyMux(system.gateway)
    reply = await mux.request(SUBJECTS.call("kit_add"), b'{"a":1,"b":2}', timeout_s=10)
    assert decode(reply.data, CallToolResult).structured_content == 3
    forged = f"{inbox_prefix('gateway')}.any.{mux.waiting + 1}"
    found = await violations(secure_server, role, "publish", forged)
    assert found, f"a {role} could publish into the gateway's replies"
