"""The gateway's audit events against a real nats-server, registry and worker: every call through
the gateway (real MCP client) is one event on the audit stream, with its arguments redacted as
``[audit]`` says; auth failures too; ``toolbus audit`` prints them; a missing stream holds
events back (bounded), it does not lose the calls."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from gateway.audit_trail import REDACTED, AuditTrail, Redactor, Refusals, trace_id
from gateway.principals import Principal
from gateway.tool_service import CallRecord
from registry.audit_stream import ensure_audit_stream, recent
from schemas.config import DEFAULT_REDACT_KEYS, AuditSettings, load_settings
from schemas.wire import AuthFailureEvent
from tests.conftest import eventually, nats_settings, toolbus
from tests.gateway.responders import RunningGateway, TaskSystem, audit_events, ready, running_gateway

ITEM = {"name": "hunter2", "color": "red", "count": None, "tags": ["t"]}
AUDIT = {
    "redact_keys": [*DEFAULT_REDACT_KEYS, "name"],
    "tools": {"kit_add": {"arguments": "keep"}, "kit_greet": {"arguments": "omit"}},
}


@asynccontextmanager
async def audited_gateway(system: TaskSystem, audit: dict[str, Any]) -> AsyncIterator[RunningGateway]:
    """A gateway of ``system``'s deployment with ``[audit]`` set to ``audit``."""
    nats = {"url": system.nats_url, "prefix": system.subjects.prefix}
    async with running_gateway(load_settings(None, nats=nats, audit=audit)) as gateway:
        yield await ready(gateway)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_every_call_is_one_redacted_event(task_system: TaskSystem, tmp_path: Path, mode: str) -> None:
    before = time.time()
    # Kept verbatim for kit_add, omitted for kit_greet, and every "name" redacted besides the defaults.
    async with audited_gateway(task_system, AUDIT) as gateway, Client(gateway.url, mode=mode) as client:
        ok = await client.call_tool("kit_add", {"a": 2, "b": 3})
        failed = await client.call_tool("kit_divide", {"a": 1, "b": 0})
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("no_such_tool", {"token": "t0k"})
        invalid = await client.call_tool(
            "kit_divide", {"a": 1, "b": "x", "auth": {"password": "p", "list": [{"api_key": "k", "x": 1}]}}
        )
        echoed = await client.call_tool("kit_echo_item", {"item": ITEM})
        greeted = await client.call_tool("kit_greet", {"name": "bob"})
    assert not ok.is_error and failed.is_error and invalid.is_error and not echoed.is_error and not greeted.is_error

    events = await audit_events(task_system.nc, task_system.subjects, "call", 6)
    assert len(events) == 6, "one event per call, no more"
    bodies = [body for _, _, body in events]
    assert [(b["tool"], b["outcome"]) for b in bodies] == [
        ("kit_add", "ok"),
        ("kit_divide", "tool_error"),
        ("no_such_tool", "unknown_tool"),
        ("kit_divide", "invalid_arguments"),
        ("kit_echo_item", "ok"),
        ("kit_greet", "ok"),
    ]
    assert [s.removeprefix(f"{task_system.subjects.prefix}.audit.call.") for _, s, _ in events] == [
        b["tool"] for b in bodies
    ]
    era = "2025-11-25" if mode == "legacy" else "2026-07-28"
    for body in bodies:
        assert (body["principal"], body["authMethod"], body["era"]) == ("anonymous", "none", era)
        assert before <= body["startedAt"] <= time.time()
        assert 0 < body["durationMs"] < 10_000
    assert len({b["requestId"] for b in bodies}) == 6
    assert "unknown tool 'no_such_tool'" in bodies[2]["error"]
    # Arguments: kept verbatim (kit_add), redacted at any depth, omitted (kit_greet).
    assert bodies[0]["arguments"] == {"a": 2, "b": 3}
    assert bodies[2]["arguments"] == {"token": REDACTED}
    assert bodies[3]["arguments"] == {
        "a": 1,
        "b": "x",
        "auth": {"password": REDACTED, "list": [{"api_key": REDACTED, "x": 1}]},
    }
    assert bodies[3]["argumentsRedacted"] == 2
    assert bodies[4]["arguments"] == {"item": {**ITEM, "name": REDACTED}}
    assert "arguments" not in bodies[5]
    raw = json.dumps(bodies)
    for secret in ("t0k", '"p"', '"k"', "hunter2", "bob"):
        assert secret not in raw

    settings = nats_settings(tmp_path, task_system.nats_url, task_system.subjects.prefix)
    printed = await asyncio.to_thread(toolbus, "audit", "--config", str(settings))
    assert printed.returncode == 0, printed.stderr
    lines = [line for line in printed.stdout.splitlines() if " call " in line]
    assert len(lines) == 6
    assert "call kit_add → ok principal=anonymous (none)" in lines[0]
    assert 'arguments={"a":2,"b":3}' in lines[0]
    assert "call no_such_tool → unknown_tool" in lines[2] and "error=" in lines[2]
    assert f"request={bodies[3]['requestId']}" in lines[3]
    as_json = await asyncio.to_thread(toolbus, "audit", "--json", "--config", str(settings))
    printed_events = [json.loads(line)["event"] for line in as_json.stdout.splitlines()]
    assert [e for e in printed_events if e.get("requestId")] == bodies


async def test_omit_and_keep_for_every_tool(task_system: TaskSystem) -> None:
    async with audited_gateway(task_system, {"arguments": "omit"}) as gateway, Client(gateway.url) as client:
        await client.call_tool("kit_greet", {"name": "omitted"})
    async with audited_gateway(task_system, {"arguments": "keep"}) as gateway, Client(gateway.url) as client:
        await client.call_tool("kit_divide", {"a": 1, "b": 2, "password": "kept"})
    first, second = [body for _, _, body in await audit_events(task_system.nc, task_system.subjects, "call", 2)]
    assert first["tool"] == "kit_greet" and "arguments" not in first
    assert second["arguments"] == {"a": 1, "b": 2, "password": "kept"}


async def test_auth_failures_are_events_and_printed(task_system: TaskSystem, tmp_path: Path) -> None:
    gateway = await task_system.gateway()
    trail = gateway.state.audit
    assert trail is not None
    trail.auth_failure("missing_token", status=401, remote="10.0.0.7:5123", method="initialize")
    trail.auth_failure(
        "forbidden_tool",
        status=403,
        subject="alice",
        auth_method="jwt",
        remote="10.0.0.8:1",
        method="tools/call",
        tool="kit_burn",
        detail="needs scope tools:burn",
    )
    events = await audit_events(task_system.nc, task_system.subjects, "auth", 2)
    (_, subject1, missing), (_, subject2, forbidden) = events
    assert subject1 == task_system.subjects.audit_auth("missing_token")
    assert subject2 == task_system.subjects.audit_auth("forbidden_tool")
    assert missing["reason"] == "missing_token" and missing["status"] == 401 and "subject" not in missing
    assert forbidden["subject"] == "alice" and forbidden["tool"] == "kit_burn" and forbidden["authMethod"] == "jwt"
    assert abs(forbidden["at"] - time.time()) < 60
    settings = nats_settings(tmp_path, task_system.nats_url, task_system.subjects.prefix)
    printed = await asyncio.to_thread(toolbus, "audit", "--config", str(settings))
    lines = [line for line in printed.stdout.splitlines() if "refused" in line]
    assert "refused missing_token (401) remote=10.0.0.7:5123 method=initialize" in lines[0]
    assert (
        "refused forbidden_tool (403) subject=alice auth=jwt remote=10.0.0.8:1 method=tools/call tool=kit_burn"
        " 'needs scope tools:burn'"
    ) in lines[1]


def record(n: int, arguments: Any = None) -> CallRecord:
    return CallRecord(
        "kit_add", Principal("p"), "2026-07-28", f"req{n}", None, arguments, "ok", None, time.time(), 0.001
    )


async def test_without_a_stream_events_wait_bounded_then_arrive_once(nc: NatsClient, subjects: Subjects) -> None:
    trail = AuditTrail(nc, subjects, AuditSettings(queue_size=3))
    trail.start()
    try:
        for n in range(5):  # nothing stores them yet: no registry has created the stream
            trail.observe(record(n))
        await eventually(lambda: trail.backlog == 3 and not trail.published, what="events were not held back")
        assert trail.dropped == 2  # the queue keeps the newest queue_size events
        await ensure_audit_stream(nc, subjects)  # the registry starts
        events = await audit_events(nc, subjects, "call", 3)
        await eventually(lambda: trail.backlog == 0, what="the backlog never drained")
        assert [body["requestId"] for _, _, body in events] == ["req2", "req3", "req4"]
        trail.observe(record(5))
        await audit_events(nc, subjects, "call", 4)
        assert len(await recent(nc, subjects, 100)) == 4, "a retried event is stored once"
    finally:
        await trail.stop()


async def test_stop_publishes_what_is_queued(nc: NatsClient, subjects: Subjects) -> None:
    await ensure_audit_stream(nc, subjects)
    trail = AuditTrail(nc, subjects, AuditSettings())
    trail.start()
    for n in range(50):
        trail.observe(record(n, {"n": n}))
    await trail.stop()
    assert trail.published == 50
    assert len(await recent(nc, subjects, 100)) == 50


async def test_stop_tries_once_more_and_does_not_wait_out_its_timeout_when_the_bus_refuses(
    nc: NatsClient, subjects: Subjects
) -> None:
    trail = AuditTrail(nc, subjects, AuditSettings())  # no audit stream: every publish is refused
    trail.start()
    trail.observe(record(0))
    await eventually(lambda: trail.backlog == 1 and not trail.published, what="the event was not held back")
    async with asyncio.timeout(30):  # the old stop waited out a backoff, then all of its timeout
        await trail.stop(timeout_s=600)
    assert trail.backlog == 1 and not trail.published  # logged as lost, not silently dropped


def test_redaction_defaults_and_limits() -> None:
    redactor = Redactor(AuditSettings())
    kept, count = redactor.apply("t", {"API_Key": 1, "Authorization": "b", "keyboard": "k", "city": "Oslo"})
    assert kept == {"API_Key": REDACTED, "Authorization": REDACTED, "keyboard": REDACTED, "city": "Oslo"}
    assert count == 3
    original = {"secret": "s"}
    redactor.apply("t", original)
    assert original == {"secret": "s"}, "the call's own arguments are never changed"
    big, _ = Redactor(AuditSettings(max_arguments_bytes=64)).apply("t", {"text": "x" * 100})
    assert big == "[111 bytes of arguments, not kept]"


def test_trace_id_comes_from_a_w3c_traceparent() -> None:
    assert trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id("garbage") == "" and trace_id(None) == ""


def test_config_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="arguments"):
        AuditSettings.model_validate({"arguments": "hash"})


# -- a flood of refusals cannot flood the audit stream --------------------------------------------


def refusal(reason: str = "missing_token", remote: str = "10.0.0.7:5123", **fields: Any) -> AuthFailureEvent:
    return AuthFailureEvent(reason=reason, status=401, at=time.time(), remote=remote, **fields)


async def test_refusals_alike_are_one_event_then_one_count_per_window() -> None:
    emitted: list[AuthFailureEvent] = []
    refusals = Refusals(emitted.append, window_s=0.2, max_kinds=3)
    for port in range(100):  # new connections (ports) from one host are one kind
        refusals.add(refusal(remote=f"10.0.0.7:{port}"))
    refusals.add(refusal(reason="invalid_token", subject="bob"))
    assert [(e.reason, e.repeated) for e in emitted] == [("missing_token", 0), ("invalid_token", 0)]
    await eventually(lambda: len(emitted) == 3, timeout_s=5, what="the window never ended")
    assert (emitted[2].reason, emitted[2].repeated, emitted[2].remote) == ("missing_token", 99, "10.0.0.7:0")
    # A new window: the first one is told at once again.
    refusals.add(refusal())
    assert len(emitted) == 4 and emitted[3].repeated == 0
    # Past max_kinds, varying the claimed subject makes no new events: counted per (reason, status).
    for n in range(50):
        refusals.add(refusal(reason="invalid_token", subject=f"forged-{n}"))
    assert len(emitted) == 7  # forged-0 and forged-1 as kinds of their own, then one folded kind
    assert emitted[-1].subject == "" and "counted together" in emitted[-1].detail
    refusals.flush()
    assert emitted[-1].repeated == 47


async def test_a_flood_of_bad_tokens_reaches_the_stream_as_one_event_and_its_count(
    secured: Any, issuer: Any, task_system: TaskSystem
) -> None:
    gateway = await secured()
    trail = gateway.state.audit
    assert trail is not None
    trail.refusals.window_s = 3600  # the flood is one window however slow this machine is
    claimed = f"flooder-{time.monotonic_ns()}"
    forged = issuer.token(sub=claimed, aud="https://elsewhere.example/mcp")
    headers = {"Authorization": f"Bearer {forged}", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(timeout=10) as http:
        for _ in range(100):
            answer = await http.post(gateway.url, headers=headers, content=b"{}")
            assert answer.status_code == 401
    trail.refusals.flush()  # end the window now rather than in REFUSALS_WINDOW_S

    async def floods() -> list[dict[str, Any]] | None:
        events = [body for _, _, body in await recent(task_system.nc, task_system.subjects, 1000)]
        mine = [e for e in events if e.get("subject") == claimed]
        return mine if len(mine) >= 2 else None

    first, summary = await eventually(floods, timeout_s=10, what="the flood's events never reached the stream")
    assert "repeated" not in first and summary["repeated"] == 99
    await asyncio.sleep(0.5)
    assert len(await floods() or []) == 2


async def test_forged_subjects_cannot_use_up_the_kinds_a_real_principals_refusal_needs() -> None:
    # An attacker without a credential sends bad tokens claiming ever new subjects; then alice,
    # verified, is refused a tool. Her refusal keeps its own event, with her name and the tool.
    emitted: list[AuthFailureEvent] = []
    refusals = Refusals(emitted.append, window_s=3600, max_kinds=4)
    for n in range(50):
        refusals.add(refusal(reason="invalid_token", subject=f"forged-{n}"))
    refusals.add(
        AuthFailureEvent(
            reason="forbidden_tool",
            status=403,
            at=time.time(),
            subject="jwt:https://id.example.test#alice",
            auth_method="jwt",
            tool="kit_divide",
        )
    )
    alice = [e for e in emitted if e.reason == "forbidden_tool"]
    assert len(alice) == 1
    assert alice[0].subject == "jwt:https://id.example.test#alice" and alice[0].tool == "kit_divide"
    refusals.flush()
    forged = [e for e in emitted if e.reason == "invalid_token"]
    assert sum(e.repeated or 1 for e in forged) == 50  # every forged one is still counted


async def test_events_are_acknowledged_through_the_trails_own_subscription_and_stored_in_order(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects
) -> None:
    await ensure_audit_stream(nc, subjects)
    trail_nc = await connect(nats_server.url, name="audit-trail")
    trail = AuditTrail(trail_nc, subjects, AuditSettings())
    trail.start()
    try:
        for n in range(300):  # more than one batch
            trail.observe(record(n, {"n": n}))
        await eventually(lambda: trail.published == 300, what="the events were not published")
        events = await recent(nc, subjects, 400)
        assert [body["requestId"] for _, _, body in events] == [f"req{n}" for n in range(300)]
        # A forged acknowledgement (a wrong batch, a wrong index, junk) changes nothing.
        trail.observe(record(300))
        await trail_nc.publish(f"{trail_nc.new_inbox()}.x.0", b"junk")
        await eventually(lambda: trail.published == 301 and trail.backlog == 0, what="the last event was lost")
    finally:
        await trail.stop()
        await trail_nc.close()
