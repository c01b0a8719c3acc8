"""The whole path with real processes: MCP client → gateway → NATS → worker → wasmtime → back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.errors
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from bus.connection import connect
from bus.credentials import credentials_dir, credentials_file
from bus.errors import BusUnavailable
from bus.permissions import ROLES
from bus.subjects import Subjects
from schemas.codec import decode_json
from schemas.config import NatsSettings, load_settings
from tests.e2e.conftest import RunningSystem, child_processes, nats_as

ERAS = {"legacy": "2025-11-25", "auto": "2026-07-28"}
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}


@pytest.fixture(params=sorted(ERAS))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_banner_says_where_everything_is(system: RunningSystem) -> None:
    assert system.mcp_url in system.banner
    assert system.nats_url in system.banner
    for tool in ("calc_add", "calc_divide", "inventory_price_quote"):
        assert tool in system.banner


async def test_both_eras_list_the_example_tools_with_their_schemas(system: RunningSystem, mode: str) -> None:
    async with Client(system.mcp_url, mode=mode) as client:
        assert client.protocol_version == ERAS[mode]
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"calc_add", "calc_divide", "inventory_price_quote", "inventory_catalog_describe"} <= set(tools)
    add = tools["calc_add"].input_schema
    assert add["type"] == "object" and add["required"] == ["a", "b"]
    assert {k: {f: v for f, v in s.items() if f != "description"} for k, s in add["properties"].items()} == {
        "a": INT32,
        "b": INT32,
    }
    item = tools["inventory_price_quote"].input_schema["properties"]["item"]
    assert item["properties"]["category"]["enum"] == ["tool", "part", "material"]
    assert {"type": "null"} in item["properties"]["price"]["anyOf"]
    assert item["properties"]["tags"]["type"] == "array"
    assert set(item["required"]) == {"name", "category", "price", "tags"} - {"price"} or "price" in item["required"]


async def test_the_example_calc_view_serves_only_calc_tools(system: RunningSystem, mode: str) -> None:
    """``[views.calc]`` (as examples/toolbus.toml has it), served by ``toolbus up`` on /mcp/calc (docs/views.md)."""
    async with Client(f"{system.mcp_url}/calc", mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        added = await client.call_tool("calc_add", {"a": 2, "b": 3})
        with pytest.raises(MCPError) as refused:
            await client.call_tool("inventory_price_quote", {})
    assert "calc_add" in names and all(name.startswith("calc_") for name in names), names
    assert not added.is_error and added.content[0].text == "5"  # type: ignore[union-attr]
    assert "unknown tool 'inventory_price_quote'" in str(refused.value)


async def test_add_and_divide_in_both_eras(system: RunningSystem, mode: str) -> None:
    async with Client(system.mcp_url, mode=mode) as client:
        added = await client.call_tool("calc_add", {"a": 2, "b": 3})
        divided = await client.call_tool("calc_divide", {"a": 1, "b": 0})
        quarter = await client.call_tool("calc_divide", {"a": 1, "b": 4})
    assert not added.is_error and added.content[0].text == "5"  # type: ignore[union-attr]
    # 2026-07-28 carries any JSON as structuredContent; a 2025 client gets it only for objects.
    assert added.structured_content == (5 if mode == "auto" else None)
    assert divided.is_error and divided.content[0].text == "division by zero"  # type: ignore[union-attr]
    assert quarter.content[0].text == "0.25"  # type: ignore[union-attr]


async def test_a_record_with_an_enum_an_option_and_a_list_round_trips(system: RunningSystem, mode: str) -> None:
    item = {"name": "M6 bolt", "category": "part", "price": 0.5, "tags": ["steel"]}
    async with Client(system.mcp_url, mode=mode) as client:
        quote = await client.call_tool("inventory_price_quote", {"item": item, "quantity": 20})
        unpriced = await client.call_tool("inventory_price_quote", {"item": {**item, "price": None}, "quantity": 1})
    assert not quote.is_error
    assert quote.structured_content is not None
    assert quote.structured_content["category"] == "part"
    assert quote.structured_content["total"] == pytest.approx(9.0)  # 10% off from 10 parts
    assert unpriced.structured_content is not None and unpriced.structured_content["total"] is None


async def test_wrong_argument_types_are_a_tool_error_naming_the_field(system: RunningSystem, mode: str) -> None:
    async with Client(system.mcp_url, mode=mode) as client:
        result = await client.call_tool("calc_add", {"a": 2, "b": "three"})
        nested = await client.call_tool(
            "inventory_price_quote",
            {"item": {"name": "x", "category": "gadget", "price": None, "tags": []}, "quantity": 1},
        )
    assert result.is_error and "b:" in result.content[0].text  # type: ignore[union-attr]
    assert nested.is_error and "item.category" in nested.content[0].text  # type: ignore[union-attr]


async def test_an_unknown_tool_is_invalid_params_naming_it(system: RunningSystem, mode: str) -> None:
    async with Client(system.mcp_url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("calc_subtract", {"a": 1, "b": 2})
    assert caught.value.code == INVALID_PARAMS
    assert "calc_subtract" in caught.value.message


async def test_a_trapping_guest_is_a_tool_error_and_the_worker_keeps_serving(system: RunningSystem, mode: str) -> None:
    async with Client(system.mcp_url, mode=mode) as client:
        trapped, added = await asyncio.gather(
            client.call_tool("kit_danger_boom", {}), client.call_tool("calc_add", {"a": 1, "b": 1})
        )
        again = await client.call_tool("calc_add", {"a": 20, "b": 22})
    assert trapped.is_error and "unreachable" in trapped.content[0].text  # type: ignore[union-attr]
    assert added.content[0].text == "2"  # type: ignore[union-attr]
    assert again.content[0].text == "42"  # type: ignore[union-attr]


async def test_a_plain_nats_request_with_only_json_gets_the_call_tool_result(system: RunningSystem) -> None:
    # As docs/security.md tells a `nats` CLI user: the operator's user and password from its file
    # under the state dir, nats-py's default inbox prefix. No toolbus code involved.
    credentials = json.loads(credentials_file(load_settings(system.config).state_dir, "operator").read_text())
    nc = await nats.connect(
        system.nats_url,
        user=credentials["user"],
        password=credentials["password"],
        allow_reconnect=False,
    )
    try:
        reply = await nc.request(Subjects().call("calc_add"), b'{"a":2,"b":3}', timeout=10)
        # Nobody subscribes to an unknown tool's subject: NATS itself answers (docs/bus-protocol.md).
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(Subjects().call("calc_subtract"), b'{"a":2,"b":3}', timeout=10)
    finally:
        await nc.close()
    assert decode_json(reply.data) == {
        "content": [{"type": "text", "text": "5"}],
        "structuredContent": 5,
        "isError": False,
    }


def toolbus(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def test_the_cli_lists_and_calls_tools(system: RunningSystem) -> None:
    listed = toolbus("tools", "--config", str(system.config))
    assert listed.returncode == 0, listed.stderr
    assert "calc_add" in listed.stdout and "sha256:" in listed.stdout
    called = toolbus("call", "--config", str(system.config), "calc_add", '{"a":2,"b":3}')
    assert called.returncode == 0, called.stderr
    assert decode_json(called.stdout.encode())["structuredContent"] == 5
    failed = toolbus("call", "--config", str(system.config), "calc_divide", '{"a":1,"b":0}')
    assert failed.returncode == 1 and '"isError":true' in failed.stdout


async def test_a_killed_worker_is_restarted_and_calls_never_hang(system: RunningSystem) -> None:
    workers = system.children()["worker"]
    killed = workers[0]
    os.kill(killed, signal.SIGKILL)
    outcomes: list[str] = []
    deadline = time.monotonic() + 60
    async with Client(system.mcp_url, mode="auto") as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                result = await client.call_tool("calc_add", {"a": 1, "b": 2})
            except MCPError as exc:
                outcomes.append(f"error {exc.code}")
                assert time.monotonic() - started < 10, "a call with no worker must fail fast, not hang"
                await asyncio.sleep(0.2)
                continue
            now = system.children().get("worker", [])
            if not result.is_error and len(now) == len(workers) and killed not in now:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"worker never came back: {outcomes[-5:]}")
    assert killed not in system.children()["worker"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="one core")
async def test_up_runs_a_worker_per_core_each_pinned_with_all_its_threads(system: RunningSystem) -> None:
    # [worker] pin_to_cores: a worker's guest threads never run on two cores at once, so a fresh
    # instance's page faults flush no other core's TLB (docs/performance-analysis.md).
    async with Client(system.mcp_url, mode="auto") as client:  # guest threads start on demand
        results = await asyncio.gather(*(client.call_tool("calc_add", {"a": i, "b": 1}) for i in range(16)))
    assert [r.content[0].text for r in results] == [str(i + 1) for i in range(16)]  # type: ignore[union-attr]

    def cores_of(pid: int) -> set[frozenset[int]]:
        return {frozenset(os.sched_getaffinity(int(task.name))) for task in Path(f"/proc/{pid}/task").iterdir()}

    def pinned_alone(threads: set[frozenset[int]]) -> bool:
        return len(threads) == 1 and len(next(iter(threads))) == 1

    workers = system.children()["worker"]
    assert len(workers) == len(os.sched_getaffinity(0))
    # A worker pins itself once every component is served, just after it says so.
    deadline = time.monotonic() + 30
    while not all(pinned_alone(cores_of(pid)) for pid in workers):
        assert time.monotonic() < deadline, [cores_of(pid) for pid in workers]
        await asyncio.sleep(0.1)
    pinned = [cores_of(pid) for pid in workers]
    assert all(pinned_alone(threads) for threads in pinned), pinned
    assert len({next(iter(threads)) for threads in pinned}) == len(workers)  # each on a core of its own
    assert cores_of(system.children()["gateway"][0]) == {frozenset(os.sched_getaffinity(0))}  # not pinned


# -- the bus of `toolbus up` is closed: per-role users, their credentials 0600 -----------------------

REFUSED_API_TIMEOUT_S = 2.0
"""A JetStream request the server refuses for permissions gets no answer; how long to wait for none."""


async def test_the_embedded_nats_refuses_anonymous_and_wrong_users(system: RunningSystem) -> None:
    with pytest.raises(BusUnavailable, match=r"[Aa]uthorization"):
        await connect(NatsSettings(url=system.nats_url, password=None), name="anonymous", allow_reconnect=False)
    with pytest.raises(BusUnavailable, match=r"[Aa]uthorization"):
        impostor = NatsSettings(url=system.nats_url, user="operator", password="guessed")
        await connect(impostor, name="impostor", allow_reconnect=False)


def test_the_credentials_are_readable_by_their_owner_only(system: RunningSystem) -> None:
    directory = credentials_dir(load_settings(system.config).state_dir)
    assert directory.stat().st_mode & 0o777 == 0o700
    files = sorted(path.name for path in directory.iterdir())
    assert files == ["gateway.json", "nats-server.conf", "operator.json", "registry.json", "worker.json"]
    for path in directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_no_password_reaches_an_argv_an_environment_or_a_log(system: RunningSystem) -> None:
    # Any local user can read every process's argv (ps); logs get shared. The passwords live in
    # the 0600 files only: not in the argv or environment of up, the nats-server or any child.
    state_dir = load_settings(system.config).state_dir
    passwords = [json.loads(credentials_file(state_dir, role).read_text())["password"] for role in ROLES]
    processes = [
        (system.process.pid, "up"),
        *((pid, " ".join(argv)) for pid, argv in child_processes(system.process.pid)),
    ]
    assert len(processes) >= 5, processes  # up, nats-server, registry, worker, gateway
    for pid, what in processes:
        visible = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        leaked = [p for p in passwords if p.encode() in visible]
        assert not leaked, f"a password is in the argv or environment of {what}"
    logs = [system.banner, (system.config.parent / "up.log").read_text(), *read_logs(state_dir)]
    assert not [p for p in passwords if any(p in log for log in logs)], "a password is in a log"


def read_logs(state_dir: Path) -> list[str]:
    return [path.read_text(errors="replace") for path in state_dir.rglob("*.log*")]


async def test_a_worker_user_cannot_read_the_audit_stream_the_operator_can(system: RunningSystem) -> None:
    subjects = Subjects()
    worker = await connect(nats_as(system.config, "worker"), name="e2e-worker", allow_reconnect=False)
    try:
        js = worker.jetstream(timeout=REFUSED_API_TIMEOUT_S)
        with pytest.raises(nats.errors.TimeoutError):
            await js.subscribe(subjects.audit_any, stream=subjects.audit_stream)
        with pytest.raises(nats.errors.TimeoutError):
            await js.stream_info(subjects.audit_stream)
    finally:
        await worker.close()
    operator = await connect(nats_as(system.config, "operator"), name="e2e-operator", allow_reconnect=False)
    try:
        info = await operator.jetstream(timeout=10).stream_info(subjects.audit_stream)
        assert info.config.name == subjects.audit_stream
    finally:
        await operator.close()
