"""Guests that ask inside durable tasks (the tasks extension's input flow), through a real gateway.

A registry, a worker with a ``TaskRunner`` serving ``examples/asking_tasks`` (componentize-py),
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
from workers.toolchains.componentize import build_component

INVALID_PARAMS = -32602
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
CAPABILITIES = {"elicitation": {}, "extensions": {TASKS_EXTENSION: {}}}
WAIT_S = 20.0


@pytest.fixture(scope="module")
def asking(engine_host: EngineHost, cache_dir: Path) -> LoadedComponent:
    """``examples/asking_tasks`` (confirm_delete, multi_input, test_tool_with_task), served with no prefix."""
    wasm = build_component(EXAMPLES_DIR / "asking_tasks", "asking-tasks", cache_dir)
    # As examples/toolbus.toml serves it: test_tool_with_task runs only as a task.
    settings = ComponentSettings.model_validate(
        {"name": "asking_tasks", "path": wasm, "prefix": "", "tools": {"test_tool_with_task": {"task": "required"}}}
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
        for tool in ("confirm_delete", "multi_input", "test_tool_with_task"):
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


async def test_a_task_asks_waits_input_required_and_completes_once_answered(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, "confirm_delete", {"filename": "a.txt"})
    waiting = await until(alice, task_id, "input_required")
    assert list(waiting["inputRequests"]) == ["elicitation"]
    assert waiting["inputRequests"]["elicitation"]["method"] == "elicitation/create"
    assert "requestState" not in waiting
    ack = await update(alice, task_id, {"elicitation": accept(confirm=True)})
    assert ack["result"]["resultType"] == "complete" and "taskId" not in ack["result"], ack
    done = await until(alice, task_id, "completed", "failed")
    assert done["status"] == "completed" and text_of(done) == "Deleted a.txt", done
    # Answers after the guest moved on change nothing: acknowledged and ignored.
    late = await update(alice, task_id, {"elicitation": accept(confirm=False)})
    assert late["result"]["resultType"] == "complete"
    assert text_of(await until(alice, task_id, "completed")) == "Deleted a.txt"


async def test_two_questions_at_once_are_answered_one_at_a_time(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, "multi_input", {})
    waiting = await until(alice, task_id, "input_required")
    assert sorted(waiting["inputRequests"]) == ["colour", "name"]
    await update(alice, task_id, {"name": accept(name="Ada")})
    partly = await result(alice, "tasks/get", {"taskId": task_id})
    assert partly["status"] == "input_required" and list(partly["inputRequests"]) == ["colour"], partly
    # The answered key cannot be answered again: only pending keys count.
    await update(alice, task_id, {"name": accept(name="Mallory")})
    await update(alice, task_id, {"colour": accept(colour="teal")})
    done = await until(alice, task_id, "completed", "failed")
    assert text_of(done) == "Name: Ada; colour: teal", done


async def test_answers_that_cannot_be_taken_are_refused_or_ignored(deployment: Deployment) -> None:
    alice, mallory = deployment.client(), deployment.client("mallory")
    task_id = await create(alice, "confirm_delete", {"filename": "b.txt"})
    await until(alice, task_id, "input_required")
    # Another principal: the task does not exist for them, and nothing is taken.
    assert jsonrpc_error_of(await update(mallory, task_id, {"elicitation": accept(confirm=False)})) == INVALID_PARAMS
    # A key never asked: ignored. An answer that is no ElicitResult, an oversized one: refused.
    assert (await update(alice, task_id, {"other": accept(confirm=False)}))["result"]["resultType"] == "complete"
    assert jsonrpc_error_of(await update(alice, task_id, {"elicitation": {"action": "maybe"}})) == INVALID_PARAMS
    assert jsonrpc_error_of(await update(alice, task_id, {"elicitation": 12345})) == INVALID_PARAMS
    big = accept(confirm=True, padding="x" * 40_000)
    assert jsonrpc_error_of(await update(alice, task_id, {"elicitation": big})) == INVALID_PARAMS
    # Another task's id with this task's keys: not found for a stranger's, ignored for a finished one.
    assert (
        jsonrpc_error_of(await update(alice, "no-such-task", {"elicitation": accept(confirm=True)})) == INVALID_PARAMS
    )
    still = await result(alice, "tasks/get", {"taskId": task_id})
    assert still["status"] == "input_required" and list(still["inputRequests"]) == ["elicitation"], still
    record = await deployment.store.get(task_id)
    assert record.answered == {} and record.rounds == []
    await update(alice, task_id, {"elicitation": accept(confirm=False)})
    assert text_of(await until(alice, task_id, "completed")) == "Kept b.txt"


async def test_a_task_whose_client_cannot_answer_is_told_unsupported(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, "confirm_delete", {}, {"extensions": {TASKS_EXTENSION: {}}})
    done = await until(alice, task_id, "completed", "failed")
    assert done["result"]["isError"] is True
    assert "Unsupported(value='elicitation')" in text_of(done), done


async def test_a_task_waiting_for_input_can_be_cancelled(deployment: Deployment) -> None:
    alice = deployment.client()
    task_id = await create(alice, "confirm_delete", {})
    await until(alice, task_id, "input_required")
    assert (await result(alice, "tasks/cancel", {"taskId": task_id}))["resultType"] == "complete"
    assert (await until(alice, task_id, "cancelled"))["status"] == "cancelled"
    assert (await update(alice, task_id, {"elicitation": accept(confirm=True)}))["result"]["resultType"] == "complete"
    assert (await deployment.store.get(task_id)).status == "cancelled"


def jsonrpc_error_of(answer: dict[str, Any]) -> int | None:
    error = answer.get("error")
    return None if error is None else int(error["code"])


# -- MRTR, then a task (a `required` tool whose guest asks: test_tool_with_task) ---------------------


async def test_a_required_tool_asks_first_then_its_answered_retry_becomes_the_task(deployment: Deployment) -> None:
    alice = deployment.client()
    call = {"name": "test_tool_with_task", "arguments": {}}
    r1 = await result(alice, "tools/call", call)
    assert r1["resultType"] == "input_required" and "taskId" not in r1, r1
    assert list(r1["inputRequests"]) == ["elicitation"]
    # Missing the answer: the question stands, and no task is made.
    again = await result(alice, "tools/call", {**call, "requestState": r1["requestState"], "inputResponses": {}})
    assert again["resultType"] == "input_required" and "taskId" not in again, again
    # Another principal cannot continue it; an answer that is no ElicitResult is refused.
    name = {"elicitation": accept(name="Alice")}
    stolen = await request(
        deployment.client("mallory"),
        "tools/call",
        {**call, "requestState": again["requestState"], "inputResponses": name},
    )
    assert jsonrpc_error_of(stolen) == INVALID_PARAMS
    bogus = {**call, "requestState": again["requestState"], "inputResponses": {"elicitation": {"action": "maybe"}}}
    assert jsonrpc_error_of(await request(alice, "tools/call", bogus)) == INVALID_PARAMS
    created = await result(alice, "tools/call", {**call, "requestState": again["requestState"], "inputResponses": name})
    assert created["resultType"] == "task" and "requestState" not in created and "inputRequests" not in created
    done = await until(alice, created["taskId"], "completed", "failed")
    assert done["status"] == "completed" and text_of(done) == "Hello, Alice!", done


async def test_a_task_nobody_answers_is_failed_after_the_input_wait(
    deployment: Deployment, nc: NatsClient, subjects: Subjects
) -> None:
    alice = deployment.client()
    task_id = await create(alice, "confirm_delete", {})
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
    task_id = await create(alice, "multi_input", {})
    await until(alice, task_id, "input_required")
    await update(alice, task_id, {"name": accept(name="Ada")})
    # The first run's work, delivered again (as when its worker died before acknowledging it): the
    # guest re-runs without answers and asks anew; the question replaces the half-answered one.
    work = TaskWork(task_id=task_id, tool="multi_input", arguments={}, capabilities=["elicitation"])
    headers = {"Nats-Msg-Id": f"{task_id}.delivered-again"}
    await nc.jetstream().publish(subjects.task_work("multi_input"), encode(work), headers=headers)
    async with asyncio.timeout(WAIT_S):
        while True:
            record = await deployment.store.get(task_id)
            if not record.answered:
                break
            await asyncio.sleep(0.05)
    assert record.status == "input_required" and sorted(record.input_requests) == ["colour", "name"]
    await update(alice, task_id, {"name": accept(name="Grace"), "colour": accept(colour="red")})
    assert text_of(await until(alice, task_id, "completed")) == "Name: Grace; colour: red"
