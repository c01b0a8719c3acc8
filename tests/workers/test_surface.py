"""Resources, prompts and completion of a component (toolbus:mcp/resources|prompts|completion),
against a real worker, wasmtime and nats-server: the exports are found at load and are not tools,
their lists are announced with the tools, and reads, gets and completions are served over NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from bus.subjects import Header, Subjects
from schemas.codec import decode, encode
from schemas.config import ComponentSettings, WorkerSettings
from schemas.errors import ErrorCode
from schemas.wire import (
    Complete,
    CompleteReply,
    ErrorReply,
    GetPrompt,
    GetPromptReply,
    ReadResource,
    ReadResourceReply,
    ResourceUpdated,
    WorkerAnnouncement,
)
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.notify_host import MAX_UPDATES_PER_RUN
from workers.service import WorkerService


@pytest.fixture(scope="module")
def conformance(engine_host: EngineHost, cache_dir: Path, conformance_wasm: Path) -> LoadedComponent:
    return LoadedComponent.load(
        engine_host, ComponentSettings(name="test", path=conformance_wasm), conformance_wasm, cache_dir
    )


@pytest.fixture
def served(kit: LoadedComponent, conformance: LoadedComponent) -> list[LoadedComponent]:
    return [kit, conformance]


def test_mcp_exports_are_listed_at_load_and_are_not_tools(conformance: LoadedComponent) -> None:
    names = {tool.name for tool in conformance.tools}
    assert "test_simple_text" in names
    assert not any("resources" in n or "prompts" in n or "completion" in n for n in names)
    surface = conformance.surface
    assert [r.uri for r in surface.resources] == [
        "test://static-text",
        "test://static-binary",
        "test://watched-resource",
    ]
    assert [t.uri_template for t in surface.templates] == ["test://template/{id}/data"]
    assert [p.name for p in surface.prompts] == [
        "test_simple_prompt",
        "test_prompt_with_arguments",
        "test_prompt_with_embedded_resource",
        "test_prompt_with_image",
        "test_input_required_result_prompt",
    ]
    assert surface.prompts[1].guest_name == "prompt_with_arguments"
    assert [a.name for a in surface.prompts[1].arguments] == ["arg1", "arg2"]
    assert surface.completion


def test_a_component_without_mcp_exports_has_an_empty_surface(kit: LoadedComponent) -> None:
    assert kit.surface.empty


async def ask(nc: NatsClient, subjects: Subjects, request: object) -> tuple[bytes, dict[str, str]]:
    reply = await nc.request(subjects.surface("test"), encode(request), timeout=10)
    return reply.data, reply.headers or {}


async def test_reads_gets_and_completions_are_served_over_nats(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    body, headers = await ask(nc, subjects, ReadResource("test://static-text"))
    assert Header.ERROR not in headers
    contents = decode(body, ReadResourceReply).contents
    assert contents[0].text == "This is the content of the static text resource."

    body, _ = await ask(nc, subjects, ReadResource("test://template/42/data"))
    assert '"id": "42"' in (decode(body, ReadResourceReply).contents[0].text or "")

    body, _ = await ask(nc, subjects, ReadResource("test://static-binary"))
    assert decode(body, ReadResourceReply).contents[0].blob

    body, headers = await ask(nc, subjects, ReadResource("test://nowhere"))
    assert headers[Header.ERROR] == str(int(ErrorCode.NOT_FOUND))
    assert "test://nowhere" in decode(body, ErrorReply).error.message

    body, _ = await ask(nc, subjects, GetPrompt("prompt_with_arguments", {"arg1": "a", "arg2": "b"}))
    prompt = decode(body, GetPromptReply)
    assert prompt.messages[0].role == "user"
    assert "arg1='a', arg2='b'" in encode(prompt.messages[0].content).decode()

    body, headers = await ask(nc, subjects, GetPrompt("prompt_with_arguments", {}))
    assert headers[Header.ERROR] == str(int(ErrorCode.INVALID_PARAMS))

    body, _ = await ask(nc, subjects, Complete("prompt", "prompt_with_arguments", "arg1", "pa"))
    assert decode(body, CompleteReply).values == ["paris", "park", "party"]


async def test_a_body_that_is_no_surface_request_is_a_typed_error(
    nc: NatsClient, subjects: Subjects, worker: WorkerService
) -> None:
    reply = await nc.request(subjects.surface("test"), b'{"method": "tools/call"}', timeout=10)
    assert reply.headers and reply.headers[Header.ERROR] == str(int(ErrorCode.BAD_REQUEST))


async def test_surfaces_are_announced_with_the_tools(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    sub = await nc.subscribe(subjects.announce)
    await worker.announce()
    announcement = decode((await sub.next_msg(timeout=5)).data, WorkerAnnouncement)
    await sub.unsubscribe()
    assert [s.component for s in announcement.surfaces] == ["test"]
    assert len(announcement.surfaces[0].prompts) == 5


async def test_a_guest_notification_is_published(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    sub = await nc.subscribe(subjects.resource_updated)
    reply = await nc.request(subjects.call("test_update_watched_resource"), b"{}", timeout=10)
    assert not reply.headers
    update = decode((await asyncio.wait_for(sub.next_msg(timeout=5), 5)).data, ResourceUpdated)
    await sub.unsubscribe()
    assert update == ResourceUpdated(uri="test://watched-resource", component="test")


NOTIFY_FLOOD_WAT = """
(component
  (import "toolbus:mcp/notify@0.1.0" (instance $notify
    (export "resource-updated" (func (param "uri" string)))))
  (core module $Memory (memory (export "mem") 1) (data (i32.const 0) "flood://x"))
  (core instance $memory (instantiate $Memory))
  (alias core export $memory "mem" (core memory $mem))
  (core func $updated (canon lower (func $notify "resource-updated") (memory $mem) string-encoding=utf8))
  (core module $Main
    (import "host" "updated" (func $updated (param i32 i32)))
    (func (export "flood") (param $n i32) (result i32)
      (local $i i32)
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (call $updated (i32.const 0) (i32.const 9))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
      (local.get $i)))
  (core instance $main (instantiate $Main (with "host" (instance (export "updated" (func $updated))))))
  (func (export "flood") (param "n" u32) (result u32) (canon lift (core func $main "flood"))))
"""


async def test_a_guest_flooding_notify_publishes_a_bounded_number_of_updates(
    nc: NatsClient, subjects: Subjects, engine_host: EngineHost, cache_dir: Path, tmp_path: Path
) -> None:
    # Attack: one call loops on notify.resource-updated. Every update is a bus message to every
    # gateway (and each relays it to its subscribers) and waits in the worker's outbox ahead of
    # other calls' replies; a loop of 200 000 published 200 000.
    wat = tmp_path / "flooder.wat"
    wat.write_text(NOTIFY_FLOOD_WAT)
    flooder = LoadedComponent.load(engine_host, ComponentSettings(name="flooder", path=wat), wat, cache_dir)
    service = WorkerService(nc, subjects, WorkerSettings(), [flooder])
    await service.start()
    updates = await nc.subscribe(subjects.resource_updated)
    try:
        reply = await nc.request(subjects.call("flooder_flood"), b'{"n": 200000}', timeout=30)
        assert not (reply.headers or {}).get(Header.ERROR), reply.data
        await nc.flush()
        await asyncio.sleep(0.5)
        assert 0 < updates.pending_msgs <= MAX_UPDATES_PER_RUN
    finally:
        await updates.unsubscribe()
        await service.stop(grace_s=1)
