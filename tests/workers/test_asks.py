"""Guests that ask (``toolbus:mcp/client``), against a real worker and nats-server: a question
suspends the guest, a resume wakes it, and every way a wait can end is an answer, never a hang."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects
from gateway.askers import capabilities_of
from schemas.codec import decode, encode
from schemas.config import ComponentSettings, WorkerSettings
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorReply, GuestAnswer, GuestQuestion
from tests.conftest import deadline_in
from workers.conversation import MAX_QUESTIONS_PER_CALL, Conversation, Suspensions
from workers.sandbox.call_context import AskFailed, CallContext
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService

KEY = "k" * 32
ALL = "elicitation,sampling,roots"


@pytest.fixture(scope="module")
def conformance(engine_host: EngineHost, cache_dir: Path, conformance_wasm: Path) -> LoadedComponent:
    return LoadedComponent.load(
        engine_host, ComponentSettings(name="test", path=conformance_wasm), conformance_wasm, cache_dir
    )


@pytest.fixture
async def asking_worker(nc: NatsClient, subjects: Subjects, conformance: LoadedComponent) -> Any:
    service = WorkerService(
        nc,
        subjects,
        WorkerSettings(concurrency=2, ask_timeout_s=1.5),
        [conformance],
        principal_signer=PrincipalSigner(KEY),
    )
    await service.start()
    yield service
    await service.stop(grace_s=1)


def signed(subject: str, body: bytes, principal: str | None, request_id: str, **extra: str) -> dict[str, str]:
    headers = {Header.REQUEST_ID: request_id, **deadline_in(20), **extra}
    if principal is not None:
        PrincipalSigner(KEY).stamp(headers, principal, subject=subject, body=body, valid_for_s=20)
    return headers


async def call(
    nc: NatsClient,
    subjects: Subjects,
    tool: str,
    args: dict[str, Any],
    *,
    can_ask: str | None = ALL,
    principal: str | None = "alice",
    request_id: str | None = None,
) -> Msg:
    subject, body = subjects.call(tool), encode(args)
    extra = {} if can_ask is None else {Header.CAN_ASK: can_ask}
    headers = signed(subject, body, principal, request_id or uuid.uuid4().hex, **extra)
    return await nc.request(subject, body, timeout=20, headers=headers)


async def resume(
    nc: NatsClient, subjects: Subjects, question: Msg, answer: GuestAnswer, principal: str | None = "alice"
) -> Msg:
    assert question.headers is not None
    subject, body = subjects.resume(question.headers[Header.WORKER]), encode(answer)
    headers = signed(subject, body, principal, uuid.uuid4().hex, **{Header.CAN_ASK: ALL})
    return await nc.request(subject, body, timeout=20, headers=headers)


def text(msg: Msg) -> str:
    assert not (msg.headers or {}).get(Header.ERROR), msg.data
    result = decode(msg.data, CallToolResult)
    return result.content[0].text  # type: ignore[union-attr]


def suspension(msg: Msg) -> str:
    assert msg.headers is not None and Header.QUESTION in msg.headers, msg.data
    return msg.headers[Header.QUESTION]


async def test_an_asking_tool_is_flagged_and_a_plain_one_is_not(
    conformance: LoadedComponent, kit: LoadedComponent
) -> None:
    assert all(tool.asks for tool in conformance.tools)  # its component imports toolbus:mcp/client
    assert not any(tool.asks for tool in kit.tools)


async def test_a_guest_asks_blocks_and_resumes_with_the_answer(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    question = await call(nc, subjects, "test_elicitation", {"message": "Your name?"})
    asked = decode(question.data, GuestQuestion)
    assert asked.requests["elicitation"]["method"] == "elicitation/create"
    assert asked.requests["elicitation"]["params"]["message"] == "Your name?"
    answer = {"action": "accept", "content": {"response": "Ada"}}
    done = await resume(nc, subjects, question, GuestAnswer(suspension(question), {"elicitation": answer}))
    assert text(done) == 'User response: action=accept, content={"response": "Ada"}'


async def test_an_answer_larger_than_a_message_resumes_the_guest_through_a_claim_check(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    question = await call(nc, subjects, "test_elicitation", {"message": "Your life story?"})
    story = "once upon a time " * 100_000  # 1.7 MB
    answer = GuestAnswer(suspension(question), {"elicitation": {"action": "accept", "content": {"response": story}}})
    assert question.headers is not None
    subject, body = subjects.resume(question.headers[Header.WORKER]), encode(answer)
    headers = signed(subject, body, "alice", uuid.uuid4().hex, **{Header.CAN_ASK: ALL})
    payloads = Payloads(nc, subjects)
    checked_in, claim = await payloads.offload(body, headers)  # signed over the real answer, as a gateway does
    done = await nc.request(subject, checked_in, timeout=20, headers=claim)
    result = decode(await payloads.take(done.headers, done.data), CallToolResult)  # the result is large too
    assert result.content[0].text == f'User response: action=accept, content={{"response": "{story}"}}'  # type: ignore[union-attr]


async def test_two_rounds_resume_the_same_guest(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    first = await call(nc, subjects, "test_input_required_result_multi_round", {})
    answer = {"action": "accept", "content": {"name": "Ada"}}
    second = await resume(nc, subjects, first, GuestAnswer(suspension(first), {"step1": answer}))
    assert "step2" in decode(second.data, GuestQuestion).requests
    colour = {"action": "accept", "content": {"color": "blue"}}
    done = await resume(nc, subjects, second, GuestAnswer(suspension(second), {"step2": colour}))
    assert text(done) == "Multi-round complete for Ada who likes blue"


async def test_an_undeclared_capability_is_unsupported_without_a_question(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    done = await call(nc, subjects, "test_sampling", {"prompt": "hi"}, can_ask="elicitation")
    assert text(done) == "Sampling not supported or error: unsupported: sampling"
    plain = await call(nc, subjects, "test_sampling", {"prompt": "hi"}, can_ask=None)  # a plain NATS caller
    assert text(plain) == "Sampling not supported or error: unsupported: sampling"


async def test_the_answer_of_another_principal_is_refused_and_the_owner_still_resumes(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    question = await call(nc, subjects, "test_elicitation", {"message": "?"})
    answer = GuestAnswer(suspension(question), {"elicitation": {"action": "decline"}})
    for intruder in ("mallory", None):
        refused = await resume(nc, subjects, question, answer, principal=intruder)
        assert decode(refused.data, ErrorReply).error.code == ErrorCode.FORBIDDEN
    done = await resume(nc, subjects, question, answer)
    assert text(done) == "User response: action=decline, content={}"


async def test_an_unknown_or_spent_suspension_is_a_clear_error(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    question = await call(nc, subjects, "test_elicitation", {"message": "?"})
    answer = GuestAnswer(suspension(question), {"elicitation": {"action": "cancel"}})
    await resume(nc, subjects, question, answer)
    again = await resume(nc, subjects, question, answer)  # a replay of the same answer
    error = decode(again.data, ErrorReply).error
    assert error.code == ErrorCode.BAD_REQUEST and "call the tool again" in error.message


async def test_a_guest_that_waits_too_long_gets_timed_out(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    replies = await nc.subscribe(nc.new_inbox())
    subject, body = subjects.call("test_elicitation"), encode({"message": "?"})
    headers = signed(subject, body, "alice", uuid.uuid4().hex, **{Header.CAN_ASK: ALL})
    await nc.publish(subject, body, reply=replies.subject, headers=headers)
    question = await replies.next_msg(timeout=10)
    began = time.monotonic()
    done = await replies.next_msg(timeout=10)  # nobody answers: ask_timeout_s = 1.5
    assert 1.2 < time.monotonic() - began < 5
    assert text(done) == "Elicitation not supported or error: timedout"
    suspension(question)


async def test_a_call_cancelled_while_its_guest_waits_ends_cancelled(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    replies = await nc.subscribe(nc.new_inbox())
    request_id = uuid.uuid4().hex
    subject, body = subjects.call("test_elicitation"), encode({"message": "?"})
    headers = signed(subject, body, "alice", request_id, **{Header.CAN_ASK: ALL})
    await nc.publish(subject, body, reply=replies.subject, headers=headers)
    suspension(await replies.next_msg(timeout=10))
    await nc.publish(subjects.cancel(request_id))
    done = await replies.next_msg(timeout=5)
    # The guest returned (a readable result), but its caller cancelled: the reply says so.
    assert decode(done.data, ErrorReply).error.code == ErrorCode.CANCELLED


async def test_the_wait_does_not_count_against_the_time_limit(
    nc: NatsClient, subjects: Subjects, engine_host: EngineHost, cache_dir: Path, conformance_wasm: Path
) -> None:
    settings = ComponentSettings.model_validate(
        {"name": "test", "path": str(conformance_wasm), "limits": {"timeout_s": 1.0}}
    )
    short = LoadedComponent.load(engine_host, settings, conformance_wasm, cache_dir)
    service = WorkerService(nc, subjects, WorkerSettings(concurrency=1), [short], principal_signer=PrincipalSigner(KEY))
    await service.start()
    try:
        question = await call(nc, subjects, "test_elicitation", {"message": "?"})
        await asyncio.sleep(1.5)  # longer than the tool may run
        answer = GuestAnswer(suspension(question), {"elicitation": {"action": "accept", "content": {"response": "x"}}})
        done = await resume(nc, subjects, question, answer)
        assert text(done) == 'User response: action=accept, content={"response": "x"}'
    finally:
        await service.stop(grace_s=1)


def test_a_guest_without_a_way_to_ask_gets_unsupported_tasks(conformance: LoadedComponent) -> None:
    # A durable task's context has no asker: the guest hears it at once, never hangs.
    result = conformance.call("test_sampling", {"prompt": "hi"}, 10, CallContext())
    assert json.dumps(result.content[0].text) == json.dumps("Sampling not supported or error: unsupported: tasks")


async def test_a_waiting_guest_gives_back_its_run_slot(
    nc: NatsClient, subjects: Subjects, conformance: LoadedComponent
) -> None:
    service = WorkerService(
        nc, subjects, WorkerSettings(concurrency=1), [conformance], principal_signer=PrincipalSigner(KEY)
    )
    await service.start()
    try:
        question = await call(nc, subjects, "test_elicitation", {"message": "?"})
        other = await call(nc, subjects, "test_simple_text", {})  # runs while the first guest waits
        assert text(other) == "This is a simple text response for testing."
        answer = GuestAnswer(suspension(question), {"elicitation": {"action": "decline"}})
        assert text(await resume(nc, subjects, question, answer)) == "User response: action=decline, content={}"
    finally:
        await service.stop(grace_s=1)


async def test_a_guest_that_requires_an_undeclared_capability_ends_the_call_with_a_typed_error(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    for can_ask in ("elicitation,roots", None):
        refused = await call(nc, subjects, "test_missing_capability", {}, can_ask=can_ask)
        error = decode(refused.data, ErrorReply).error
        assert (error.code, error.capabilities) == (ErrorCode.MISSING_CAPABILITY, ["sampling"])
    assert text(await call(nc, subjects, "test_missing_capability", {}, can_ask="sampling")) == "Success"


async def test_guests_waiting_past_waiting_guests_are_refused_so_calls_keep_their_threads(
    nc: NatsClient, subjects: Subjects, conformance: LoadedComponent
) -> None:
    # Attack: one principal starts asking calls and never answers (a 2026 client that drops its
    # input_required rounds). Each waiting guest holds a thread; with more of them than
    # ``waiting_guests`` they held every thread, and plain calls queued until ``ask_timeout_s``.
    service = WorkerService(
        nc,
        subjects,
        WorkerSettings(concurrency=1, waiting_guests=1),
        [conformance],
        principal_signer=PrincipalSigner(KEY),
    )
    await service.start()
    try:
        first = await call(nc, subjects, "test_elicitation", {"message": "?"})
        suspension(first)  # waits, within waiting_guests
        second = await asyncio.wait_for(call(nc, subjects, "test_elicitation", {"message": "?"}), 5)
        assert text(second).startswith("Elicitation not supported or error: failed")  # no room to wait: told at once
        plain = await asyncio.wait_for(call(nc, subjects, "test_simple_text", {}), 5)
        assert text(plain) == "This is a simple text response for testing."
        answer = GuestAnswer(suspension(first), {"elicitation": {"action": "decline"}})
        assert text(await resume(nc, subjects, first, answer)) == "User response: action=decline, content={}"
    finally:
        await service.stop(grace_s=1)


async def test_an_unsigned_caller_claiming_it_can_ask_gets_unsupported_not_a_question(
    nc: NatsClient, subjects: Subjects, asking_worker: WorkerService
) -> None:
    # Attack: a plain NATS caller (who may not publish resumes) sends Toolbus-Can-Ask itself. Its
    # guest used to ask and wait ask_timeout_s for an answer that could never come, holding a
    # thread, its memory and a waiting slot another client's asking call needs.
    reply = await call(nc, subjects, "test_elicitation", {"message": "?"}, principal=None)
    assert Header.QUESTION not in (reply.headers or {})
    assert text(reply) == "Elicitation not supported or error: unsupported: elicitation"


ASK_LOOP_WAT = """
(component
  (import "toolbus:mcp/client@0.1.0" (instance $client
    (type $ae' (variant (case "unsupported" string) (case "timed-out") (case "cancelled") (case "failed" string)))
    (export "ask-error" (type $ae (eq $ae')))
    (export "list-roots" (func (result (result string (error $ae)))))))
  (core module $Memory
    (memory (export "mem") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at (global.get $next))
      (global.set $next (i32.add (local.get $at) (i32.and (i32.add (local.get 3) (i32.const 7)) (i32.const -8))))
      (if (i32.gt_u (global.get $next) (i32.const 60000)) (then (global.set $next (i32.const 1024))))
      (local.get $at)))
  (core instance $memory (instantiate $Memory))
  (core func $list-roots (canon lower (func $client "list-roots")
    (memory (core memory $memory "mem")) (realloc (core func $memory "realloc")) string-encoding=utf8))
  (core module $Main
    (import "host" "list-roots" (func $list-roots (param i32)))
    (import "host" "mem" (memory 1))
    (func (export "ask-loop") (param $n i32) (result i32)
      (local $i i32)
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (call $list-roots (i32.const 0))
        (br_if $done (i32.load8_u (i32.const 0)))  ;; err: the worker stopped answering
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
      (local.get $i)))
  (core instance $main (instantiate $Main (with "host" (instance
    (export "list-roots" (func $list-roots))
    (export "mem" (memory $memory "mem"))))))
  (func (export "ask-loop") (param "n" u32) (result u32) (canon lift (core func $main "ask-loop"))))
"""


async def test_a_guest_asking_in_a_loop_is_stopped_after_max_questions(
    nc: NatsClient, subjects: Subjects, engine_host: EngineHost, cache_dir: Path, tmp_path: Path
) -> None:
    # Attack: roots/list is answered by clients without a person; the wait is not guest time, so
    # a guest asking it in a loop kept its thread, its memory and its caller's call for as long
    # as the client answered (a 30 s budget at microseconds a round: hours).
    wat = tmp_path / "asker.wat"
    wat.write_text(ASK_LOOP_WAT)
    asker = LoadedComponent.load(engine_host, ComponentSettings(name="asker", path=wat), wat, cache_dir)
    service = WorkerService(nc, subjects, WorkerSettings(), [asker], principal_signer=PrincipalSigner(KEY))
    await service.start()
    try:
        reply = await call(nc, subjects, "asker_ask_loop", {"n": MAX_QUESTIONS_PER_CALL + 50})
        asked = 0
        while Header.QUESTION in (reply.headers or {}):
            asked += 1
            reply = await resume(nc, subjects, reply, GuestAnswer(suspension(reply), {"roots": {"roots": []}}))
        assert asked == MAX_QUESTIONS_PER_CALL
        assert text(reply) == str(MAX_QUESTIONS_PER_CALL)  # the next ask failed at once
    finally:
        await service.stop(grace_s=1)


def test_a_url_mode_elicitation_needs_the_client_to_declare_url_mode() -> None:
    # Attack: through ask(), a guest sent elicitation/create in URL mode ("open this link") to a
    # client that declared form elicitation only (``elicitation: {}``); the spec forbids sending a
    # mode the client did not declare, and URL mode is the phishing-prone one.
    url_request = {
        "link": {
            "method": "elicitation/create",
            "params": {"mode": "url", "message": "Sign in", "url": "https://evil.example", "elicitationId": "1"},
        }
    }
    posted: list[bytes] = []
    for declared, asked in ((frozenset({"elicitation"}), False), (frozenset({"elicitation", "elicitation.url"}), True)):
        context = CallContext(reply_to="inbox")
        conversation = Conversation(
            context,
            None,
            declared,
            worker_id="w",
            suspensions=Suspensions(1),
            post=lambda _subject, body, _headers: posted.append(body),
            ask_timeout_s=0.05,
        )
        with pytest.raises(AskFailed) as failed:
            conversation.ask(url_request)
        assert failed.value.kind == ("timed-out" if asked else "unsupported"), failed.value
        assert bool(posted) is asked  # undeclared: the question never leaves the worker
    caps = types.ClientCapabilities(elicitation=types.ElicitationCapability(url=types.UrlElicitationCapability()))
    assert "elicitation.url" in capabilities_of(caps)
    assert "elicitation.url" not in capabilities_of(types.ClientCapabilities(elicitation=types.ElicitationCapability()))


@pytest.mark.parametrize(
    ("params", "needs"),
    [
        ({"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}, "sampling.tools"),
        ({"toolChoice": {"mode": "auto"}}, "sampling.tools"),
        ({"includeContext": "allServers"}, "sampling.context"),
    ],
)
def test_sampling_with_tools_or_context_needs_the_client_to_declare_them(params: dict[str, Any], needs: str) -> None:
    # Attack: a guest sent sampling/createMessage with tools (or asked for other servers' context)
    # to a client that declared plain sampling; the spec forbids both without sampling.tools /
    # sampling.context.
    request = {"s": {"method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 5, **params}}}
    posted: list[bytes] = []
    conversation = Conversation(
        CallContext(reply_to="inbox"),
        None,
        frozenset({"sampling"}),
        worker_id="w",
        suspensions=Suspensions(1),
        post=lambda _subject, body, _headers: posted.append(body),
        ask_timeout_s=0.05,
    )
    with pytest.raises(AskFailed) as failed:
        conversation.ask(request)
    assert (failed.value.kind, failed.value.message, posted) == ("unsupported", needs, [])
    declared = types.SamplingCapability(context={}, tools={})  # type: ignore[arg-type]
    assert {"sampling.tools", "sampling.context"} <= capabilities_of(types.ClientCapabilities(sampling=declared))
