"""Guests that ask inside durable tasks (the tasks extension's input flow), through a real gateway.

A registry, a worker with a ``TaskRunner`` serving the conformance guest (``examples/conformance``,
componentize-py, built once per session for the other gateway tests too; its asking tools run here
as tasks; ``examples/asking_tasks`` is the conformance suite's, tests/e2e/test_conformance.py),
and a gateway with authentication: a task whose guest asks is ``input_required`` with the question
in ``inputRequests``; ``tasks/update`` answers it (partly, then fully) and the guest is re-run with
the answers (``workers.sandbox.replay``) to completion. Attacks, each failing closed: another
principal's update, answers for keys never asked, answers that are no valid result, oversized
ones, and answers sent after the task moved on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from gateway.inbound import TASKS_EXTENSION
from registry.service import RegistryService
from registry.task_desk import TaskDesk
from schemas.codec import encode
from schemas.config import ComponentSettings, RegistrySettings, load_settings
from schemas.wire import TaskWork
from stores import TaskStore
from tests.conftest import FAST_TASKS, TEST_ANNOUNCE_INTERVAL_S, start_task_worker
from tests.gateway.auth_kit import PRINCIPAL_KEY, Issuer, auth_settings
from tests.gateway.raw_mcp import MODERN, MODERN_META, RawMcp
from tests.gateway.responders import RunningGateway, ready, running_gateway
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.replay import MAX_QUESTION_BYTES
from workers.toolchains.componentize import build_component

INVALID_PARAMS = -32602
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
CAPABILITIES = {"elicitation": {}, "sampling": {}, "roots": {}, "extensions": {TASKS_EXTENSION: {}}}
ASKS = "test_input_required_result_elicitation"
"""Asks one question (key ``user_name``), then greets the user."""
ASKS_THREE = "test_input_required_result_multiple_inputs"
"""Asks three things at once (``user_name``, ``greeting``, ``client_roots``)."""
ASKS_TWICE = "test_input_required_result_multi_round"
"""Asks ``step1``, then ``step2``."""
ASKS_FIRST = "test_elicitation"
"""Made ``required`` here: a required tool that asks (MRTR, then a task)."""
WAIT_S = 20.0


@pytest.fixture(scope="module")
def asking(engine_host: EngineHost, cache_dir: Path) -> LoadedComponent:
    """The conformance guest (its tools ask), with ``test_elicitation`` run only as a task."""
    wasm = build_component(EXAMPLES_DIR / "conformance", "test", cache_dir)
    settings = ComponentSettings.model_validate(
        {"name": "test", "path": wasm, "tools": {ASKS_FIRST: {"task": "required"}}}
    )
    return LoadedComponent.load(engine_host, settings, wasm, cache_dir)


@dataclass
class Deployment:
    gateway: RunningGateway
    issuer: Issuer
    store: TaskStore

    def client(self, sub: str = "alice") -> RawMcp:
        return RawMcp(self.gateway.url, MODERN, self.issuer.token(sub=sub))


@pytest.fixture
async def deployment(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, asking: LoadedComponent, issuer: Issuer
) -> AsyncIterator[Deployment]:
    registry = RegistryService(
        nc, subjects, RegistrySettings(), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S, tasks=FAST_TASKS
    )
    await registry.start()
    worker_nc = await connect(nats_server.url, name="asking-task-worker")
    worker = await start_task_worker(worker_nc, subjects, [asking], FAST_TASKS)
    settings = load_settings(
        None,
        nats={"url": nats_server.url, "prefix": subjects.prefix, "principal_key": PRINCIPAL_KEY},
        auth=auth_settings(issuer),
    )
    async with running_gateway(settings) as gateway:
        for tool in (ASKS, ASKS_THREE, ASKS_TWICE, ASKS_FIRST):
            await ready(gateway, tool)
        yield Deployment(gateway, issuer, await TaskStore.open(nc, subjects, FAST_TASKS))
    await worker.stop()
    await worker_nc.close()
    await registry.stop()


async def request(raw: RawMcp, method: str, params: dict[str, Any], capabilities: Any = None) -> Any:
    """One 2026-07-28 request declaring elicitation and the tasks extension; the whole JSON-RPC answer."""
    meta = {**MODERN_META, "io.modelcontextprotocol/clientCapabilities": capabilities or CAPABILITIES}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
    name = params.get("name") if method == "tools/call" else params.get("taskId")
    response = await raw.post(json.dumps(body).encode(), method=method, tool=name)
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    return json.loads(text)


async def result(raw: RawMcp, method: str, params: dict[str, Any], capabilities: Any = None) -> dict[str, Any]:
    answer = await request(raw, method, params, capabilities)
    assert "result" in answer, answer
    found: dict[str, Any] = answer["result"]
    return found


async def create(raw: RawMcp, tool: str, arguments: dict[str, Any], capabilities: Any = None) -> str:
    created = await result(raw, "tools/call", {"name": tool, "arguments": arguments}, capabilities)
    assert created["resultType"] == "task", created
    return str(created["taskId"])


async def until(raw: RawMcp, task_id: str, *statuses: str) -> dict[str, Any]:
    """``tasks/get`` until the task is in one of ``statuses``."""
    async with asyncio.timeout(WAIT_S):
        while True:
            task = await result(raw, "tasks/get", {"taskId": task_id})
            if task["status"] in statuses:
                return task
            await asyncio.sleep(0.05)


async def update(raw: RawMcp, task_id: str, responses: dict[str, Any]) -> dict[str, Any]:
    return await request(raw, "tasks/update", {"taskId": task_id, "inputResponses": responses})


def accept(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


def text_of(task: dict[str, Any]) -> str:
    return str(task["result"]["content"][0]["text"])


NAME = {"user_name": accept(name="Ada")}


async def test_a_task_asks_waits_input_required_and_completes_once_answered(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, ASKS, {})
    waiting = await until(alice, task_id, "input_required")
    assert list(waiting["inputRequests"]) == ["user_name"]
    assert waiting["inputRequests"]["user_name"]["method"] == "elicitation/create"
    assert "requestState" not in waiting
    ack = await update(alice, task_id, NAME)
    assert ack["result"]["resultType"] == "complete" and "taskId" not in ack["result"], ack
    done = await until(alice, task_id, "completed", "failed")
    assert done["status"] == "completed" and text_of(done) == "Hello, Ada!", done
    # Answers after the guest moved on change nothing: acknowledged and ignored.
    late = await update(alice, task_id, {"user_name": accept(name="Mallory")})
    assert late["result"]["resultType"] == "complete"
    assert text_of(await until(alice, task_id, "completed")) == "Hello, Ada!"


async def test_questions_asked_at_once_are_answered_one_at_a_time(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, ASKS_THREE, {})
    waiting = await until(alice, task_id, "input_required")
    assert sorted(waiting["inputRequests"]) == ["client_roots", "greeting", "user_name"]
    await update(alice, task_id, NAME)
    partly = await result(alice, "tasks/get", {"taskId": task_id})
    assert partly["status"] == "input_required" and sorted(partly["inputRequests"]) == ["client_roots", "greeting"]
    # The answered key cannot be answered again: only pending keys count.
    await update(alice, task_id, {"user_name": accept(name="Mallory")})
    sampled = {"role": "assistant", "content": {"type": "text", "text": "Hi"}, "model": "m"}
    await update(alice, task_id, {"greeting": sampled, "client_roots": {"roots": [{"uri": "file:///a"}]}})
    done = await until(alice, task_id, "completed", "failed")
    assert text_of(done) == "Name: Ada; Greeting: Hi; Roots: 1", done


async def test_a_second_question_parks_the_task_again_and_the_first_answer_is_replayed(
    deployment: Deployment,
) -> None:
    alice = deployment.client()
    task_id = await create(alice, ASKS_TWICE, {})
    assert list((await until(alice, task_id, "input_required"))["inputRequests"]) == ["step1"]
    await update(alice, task_id, {"step1": accept(name="Ada")})
    async with asyncio.timeout(WAIT_S):
        while True:
            task = await until(alice, task_id, "input_required")
            if "step2" in task["inputRequests"]:
                break
            await asyncio.sleep(0.05)
    await update(alice, task_id, {"step2": accept(color="teal")})
    done = await until(alice, task_id, "completed", "failed")
    # The third run got step1's answer from round 1 and step2's from round 2.
    assert text_of(done) == "Multi-round complete for Ada who likes teal", done
    assert len((await deployment.store.get(task_id)).rounds) == 2


async def test_answers_that_cannot_be_taken_are_refused_or_ignored(deployment: Deployment) -> None:
    alice, mallory = deployment.client(), deployment.client("mallory")
    task_id = await create(alice, ASKS, {})
    await until(alice, task_id, "input_required")
    # Another principal: the task does not exist for them, and nothing is taken.
    assert jsonrpc_error_of(await update(mallory, task_id, NAME)) == INVALID_PARAMS
    # A key never asked: ignored. An answer that is no ElicitResult, an oversized one: refused.
    assert (await update(alice, task_id, {"other": accept(name="x")}))["result"]["resultType"] == "complete"
    assert jsonrpc_error_of(await update(alice, task_id, {"user_name": {"action": "maybe"}})) == INVALID_PARAMS
    assert jsonrpc_error_of(await update(alice, task_id, {"user_name": 12345})) == INVALID_PARAMS
    big = accept(name="x" * 40_000)
    assert jsonrpc_error_of(await update(alice, task_id, {"user_name": big})) == INVALID_PARAMS
    # A task that does not exist: not found.
    assert jsonrpc_error_of(await update(alice, "no-such-task", NAME)) == INVALID_PARAMS
    still = await result(alice, "tasks/get", {"taskId": task_id})
    assert still["status"] == "input_required" and list(still["inputRequests"]) == ["user_name"], still
    record = await deployment.store.get(task_id)
    assert record.answered == {} and record.rounds == []
    await update(alice, task_id, {"user_name": accept(name="Grace")})
    assert text_of(await until(alice, task_id, "completed")) == "Hello, Grace!"


async def test_a_task_whose_client_cannot_answer_is_told_unsupported(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, "test_sampling", {"prompt": "?"}, {"extensions": {TASKS_EXTENSION: {}}})
    done = await until(alice, task_id, "completed", "failed")
    assert text_of(done) == "Sampling not supported or error: unsupported: sampling", done


async def test_a_task_waiting_for_input_can_be_cancelled(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, ASKS, {})
    await until(alice, task_id, "input_required")
    assert (await result(alice, "tasks/cancel", {"taskId": task_id}))["resultType"] == "complete"
    assert (await until(alice, task_id, "cancelled"))["status"] == "cancelled"
    assert (await update(alice, task_id, NAME))["result"]["resultType"] == "complete"
    assert (await deployment.store.get(task_id)).status == "cancelled"


def jsonrpc_error_of(answer: dict[str, Any]) -> int | None:
    error = answer.get("error")
    return None if error is None else int(error["code"])


# -- MRTR, then a task (a `required` tool whose guest asks) ---------------------------------------


async def test_a_required_tool_asks_first_then_its_answered_retry_becomes_the_task(deployment: Deployment) -> None:
    alice = deployment.client()
    call = {"name": ASKS_FIRST, "arguments": {"message": "Your name?"}}
    r1 = await result(alice, "tools/call", call)
    assert r1["resultType"] == "input_required" and "taskId" not in r1, r1
    assert list(r1["inputRequests"]) == ["elicitation"]
    # Missing the answer: the question stands, and no task is made.
    again = await result(alice, "tools/call", {**call, "requestState": r1["requestState"], "inputResponses": {}})
    assert again["resultType"] == "input_required" and "taskId" not in again, again
    # Another principal cannot continue it; an answer that is no ElicitResult is refused.
    state = again["requestState"]
    answered = {**call, "requestState": state, "inputResponses": {"elicitation": accept(response="Alice")}}
    stolen = await request(deployment.client("mallory"), "tools/call", answered)
    assert jsonrpc_error_of(stolen) == INVALID_PARAMS
    bogus = {**call, "requestState": state, "inputResponses": {"elicitation": {"action": "maybe"}}}
    assert jsonrpc_error_of(await request(alice, "tools/call", bogus)) == INVALID_PARAMS
    created = await result(alice, "tools/call", answered)
    assert created["resultType"] == "task" and "requestState" not in created and "inputRequests" not in created
    done = await until(alice, created["taskId"], "completed", "failed")
    assert done["status"] == "completed", done
    assert text_of(done) == 'User response: action=accept, content={"response": "Alice"}'


async def test_a_task_nobody_answers_is_failed_after_the_input_wait(
    deployment: Deployment, nc: NatsClient, subjects: Subjects
) -> None:
    alice = deployment.client()
    task_id = await create(alice, ASKS, {})
    await until(alice, task_id, "input_required")
    impatient = await TaskStore.open(nc, subjects, FAST_TASKS.model_copy(update={"input_wait_s": 0.01}))
    await asyncio.sleep(0.05)
    await TaskDesk(nc, subjects, impatient, knows=lambda _tool: True).sweep()
    failed = await until(alice, task_id, "failed")
    assert "did not answer" in failed["statusMessage"] and "result" not in failed, failed


async def test_a_run_delivered_again_asks_again_and_its_answers_complete_the_task(
    deployment: Deployment, nc: NatsClient, subjects: Subjects
) -> None:
    alice = deployment.client()
    task_id = await create(alice, ASKS_THREE, {})
    await until(alice, task_id, "input_required")
    await update(alice, task_id, NAME)
    # The first run's work, delivered again (as when its worker died before acknowledging it): the
    # guest re-runs without answers and asks anew; the question replaces the half-answered one.
    work = TaskWork(task_id=task_id, tool=ASKS_THREE, arguments={}, capabilities=["elicitation", "roots", "sampling"])
    headers = {"Nats-Msg-Id": f"{task_id}.delivered-again"}
    await nc.jetstream().publish(subjects.task_work(ASKS_THREE), encode(work), headers=headers)
    async with asyncio.timeout(WAIT_S):
        while True:
            record = await deployment.store.get(task_id)
            if not record.answered:
                break
            await asyncio.sleep(0.05)
    assert record.status == "input_required" and len(record.input_requests) == 3
    sampled = {"role": "assistant", "content": {"type": "text", "text": "Yo"}, "model": "m"}
    answers = {"user_name": accept(name="Grace"), "greeting": sampled, "client_roots": {"roots": []}}
    await update(alice, task_id, answers)
    assert text_of(await until(alice, task_id, "completed")) == "Name: Grace; Greeting: Yo; Roots: 0"


# -- attacks kept as tests (lane F) ----------------------------------------------------------------


async def test_a_task_whose_guest_asks_too_large_a_question_is_told_the_limit(deployment: Deployment) -> None:
    # A task keeps its question in its record (one KV value): one that cannot fit used to fail the
    # park, the run was delivered again until max_deliver, and the task failed as never finished,
    # its guest run each time. Now the guest's ask fails naming the limit, on the first run.
    alice = deployment.client()
    task_id = await create(alice, "test_sampling", {"prompt": "x" * (600 * 1024)})
    done = await until(alice, task_id, "completed", "failed", "input_required")
    assert done["status"] == "completed", done
    said = text_of(done)
    assert "a question may hold at most" in said and str(MAX_QUESTION_BYTES) in said, said[:300]
    assert (await deployment.store.get(task_id)).attempts == 1


async def test_a_round_state_cannot_start_a_task_for_other_arguments_or_another_tool(deployment: Deployment) -> None:
    # MRTR then a task: the retry that becomes the task carries round 1's answers into the task's
    # work. A state minted for one call must not seed a task for other arguments or another tool.
    alice = deployment.client()
    before = len(await deployment.store.records())
    call = {"name": ASKS_FIRST, "arguments": {"message": "Your name?"}}
    state = (await result(alice, "tools/call", call))["requestState"]
    answers = {"elicitation": accept(response="Alice")}
    other_args = {"name": ASKS_FIRST, "arguments": {"message": "Your PIN?"}}
    for retry in (other_args, {"name": ASKS, "arguments": {}}):
        refused = await request(alice, "tools/call", {**retry, "requestState": state, "inputResponses": answers})
        assert jsonrpc_error_of(refused) == INVALID_PARAMS, refused
    assert len(await deployment.store.records()) == before, "no task was created"
