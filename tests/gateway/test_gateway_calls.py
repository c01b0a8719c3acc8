"""``ToolCaller`` on its own (no MCP): headers out, results and typed errors back, over real NATS."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.payloads import Payloads
from bus.subjects import Header, Subjects
from gateway.calls import ToolCaller, error_from_reply
from gateway.errors import (
    JSONRPC_ERRORS,
    BusDisconnected,
    CallFailed,
    DeadlineExceeded,
    NoWorker,
    Overloaded,
    PayloadTooLarge,
    WorkerFailed,
    to_jsonrpc,
)
from schemas.codec import decode, encode
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, GuestAnswer, TextContent
from tests.gateway.responders import ScriptedWorker, error_reply, result_reply, silent

StartWorker = Callable[..., Awaitable[ScriptedWorker]]


async def test_a_result_comes_back_as_the_workers_bytes(
    nc: NatsClient, subjects: Subjects, worker: StartWorker
) -> None:
    reply = CallToolResult(content=[TextContent("3")], structured_content=3)
    add = await worker("add", result_reply(reply))
    caller = ToolCaller(nc, subjects, timeout_s=5)
    before_ms = time.time() * 1000
    data = await caller.call("add", {"a": 1, "b": 2}, era="2026-07-28", request_id="r1", traceparent="00-ab-cd-01")
    assert decode(data, CallToolResult) == reply
    (msg,) = add.messages
    assert msg.headers is not None
    assert msg.headers[Header.REQUEST_ID] == "r1"
    assert msg.headers[Header.ERA] == "2026-07-28"
    assert msg.headers[Header.TRACEPARENT] == "00-ab-cd-01"
    assert before_ms + 4000 < int(msg.headers[Header.DEADLINE_MS]) < time.time() * 1000 + 5000 + 1


async def test_no_responders_is_no_worker(nc: NatsClient, subjects: Subjects) -> None:
    with pytest.raises(NoWorker, match="no worker is serving tool 'add' right now; retry later"):
        await ToolCaller(nc, subjects, timeout_s=5).call("add", {}, era="2025-11-25")


async def test_silence_is_deadline_exceeded(nc: NatsClient, subjects: Subjects, worker: StartWorker) -> None:
    await worker("add", silent)
    with pytest.raises(DeadlineExceeded, match=r"within 0\.2s; the call's deadline passed"):
        await ToolCaller(nc, subjects, timeout_s=0.2).call("add", {}, era="2025-11-25")


async def test_an_error_reply_becomes_its_exception(nc: NatsClient, subjects: Subjects, worker: StartWorker) -> None:
    await worker("add", error_reply(ErrorCode.OVERLOADED, "worker w1 is at capacity"))
    with pytest.raises(Overloaded) as caught:
        await ToolCaller(nc, subjects, timeout_s=5).call("add", {}, era="2025-11-25")
    assert caught.value.message == "tool 'add': worker w1 is at capacity; retry later"
    assert caught.value.detail == "worker w1 is at capacity"


async def test_arguments_over_the_cap_are_answered_without_a_call(
    nc: NatsClient, subjects: Subjects, worker: StartWorker
) -> None:
    scripted = await worker("add", silent)
    caller = ToolCaller(nc, subjects, timeout_s=5, payloads=Payloads(nc, subjects, max_bytes=2 * 1024 * 1024))
    reply = await caller.call("add", {"blob": "x" * (3 * 1024 * 1024)}, era="2025-11-25")
    assert isinstance(reply, bytes)
    result = decode(reply, CallToolResult)
    assert result.is_error and "max_payload_bytes" in str(result.content[0])
    assert scripted.messages == [], "nothing was published"


async def test_checked_in_arguments_nobody_took_are_deleted(nc: NatsClient, subjects: Subjects) -> None:
    with pytest.raises(NoWorker):
        await ToolCaller(nc, subjects, timeout_s=5).call("add", {"blob": "x" * (2 * 1024 * 1024)}, era="2025-11-25")
    store = await nc.jetstream().object_store(subjects.payloads_store)
    stored = await store.list()  # the object once put, now only its deletion marker
    assert len(stored) == 1 and stored[0].deleted


async def test_a_closed_connection_fails_at_once(nats_server: EmbeddedNatsServer, subjects: Subjects) -> None:
    closed = await connect(nats_server.url, name="closed")
    await closed.close()
    with pytest.raises(BusDisconnected, match="not connected to NATS"):
        await ToolCaller(closed, subjects, timeout_s=5).call("add", {}, era="2025-11-25")


def test_an_undecodable_error_reply_keeps_the_header_code() -> None:
    error = error_from_reply("add", str(int(ErrorCode.OVERLOADED)), b"<html>")
    assert isinstance(error, Overloaded)
    assert error.detail == "<html>"


def test_an_unknown_error_code_is_a_worker_failure() -> None:
    body = encode({"error": {"code": 4242, "message": "from the future"}})
    error = error_from_reply("add", "4242", body)
    assert isinstance(error, WorkerFailed)
    assert "4242" in error.message


def test_every_bus_error_code_has_one_jsonrpc_code_in_the_right_band() -> None:
    assert set(JSONRPC_ERRORS) == set(ErrorCode)
    standard = {-32602, -32603, -32021}  # -32021: the spec's missing-required-client-capability
    own = [code for code in JSONRPC_ERRORS.values() if code not in standard]
    assert len(own) == len(set(own)), "each implementation-defined code means one thing"
    assert all(-32019 <= code <= -32003 for code in own)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_maps_through_to_jsonrpc(code: ErrorCode) -> None:
    error = error_from_reply("t", str(int(code)), encode({"error": {"code": int(code), "message": "m"}}))
    assert isinstance(error, CallFailed)
    assert error.code is code
    rpc = to_jsonrpc(error)
    assert rpc.code == JSONRPC_ERRORS[code]
    extra = {"requiredCapabilities": {}} if code is ErrorCode.MISSING_CAPABILITY else {}
    assert rpc.data == {"reason": code.name, "retryable": code.retryable, "tool": "t", **extra}


def test_a_missing_capability_names_what_the_client_must_declare() -> None:
    body = encode({"error": {"code": int(ErrorCode.MISSING_CAPABILITY), "message": "m", "capabilities": ["sampling"]}})
    rpc = to_jsonrpc(error_from_reply("t", str(int(ErrorCode.MISSING_CAPABILITY)), body))
    assert (rpc.code, rpc.data["requiredCapabilities"]) == (-32021, {"sampling": {}})


async def test_an_answer_over_the_cap_is_refused_naming_it_not_as_a_lost_worker(
    nc: NatsClient, subjects: Subjects
) -> None:
    # A 2026 client's inputResponses may be larger than max_payload_bytes (the body limit is the cap
    # plus 1 MiB): the claim check refused it, which read as "could not be stored; retry later" and
    # then as "the worker running tool 'ask' is gone; call the tool again" — neither true.
    cap = 2 * 1024 * 1024
    caller = ToolCaller(nc, subjects, timeout_s=5, payloads=Payloads(nc, subjects, max_bytes=cap))
    answer = GuestAnswer("s", {"elicitation": {"action": "accept", "content": {"story": "x" * (3 * 1024 * 1024)}}})
    with pytest.raises(PayloadTooLarge) as refused:
        await caller.resume("ask", "w1", answer, era="2026-07-28", request_id="r1")
    assert "max_payload_bytes" in str(refused.value) and str(cap) in str(refused.value)
