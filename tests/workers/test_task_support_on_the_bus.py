"""Task support on the bus: announced with each tool, and not enforced for direct NATS callers.

A tool's ``task`` setting is a statement to MCP clients (the gateway honours it, see
tests/gateway/test_task_support.py). A NATS caller is not an MCP client: ``PREFIX.call.TOOL`` runs
a ``required`` tool as a plain call, as docs/tasks.md says. This test keeps that decision visible.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.subjects import Subjects
from schemas.codec import decode
from schemas.config import ComponentSettings, ToolOverride
from schemas.wire import CallToolResult, WorkerAnnouncement
from tests.conftest import TESTKIT_WAT
from tests.workers.conftest import start_worker
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost


async def test_task_support_is_announced_and_a_nats_caller_runs_a_required_tool_as_a_call(
    nc: NatsClient, subjects: Subjects, engine_host: EngineHost, cache_dir: Path
) -> None:
    settings = ComponentSettings(
        name="kit", path=TESTKIT_WAT, task="required", tools={"greet": ToolOverride(task="forbidden")}
    )
    kit = LoadedComponent.load(engine_host, settings, TESTKIT_WAT, cache_dir)
    heard: list[WorkerAnnouncement] = []

    async def on_announce(msg: Msg) -> None:
        heard.append(decode(msg.data, WorkerAnnouncement))

    await nc.subscribe(subjects.announce, cb=on_announce)
    service = await start_worker(nc, subjects, kit, concurrency=1)
    try:
        reply = await nc.request(subjects.call("kit_add"), b'{"a":2,"b":3}', timeout=10)
        assert decode(reply.data, CallToolResult).structured_content == 5
    finally:
        await service.stop(grace_s=1)
    await nc.flush()
    await asyncio.sleep(0.1)
    announced = {t.name: t.task_support for t in heard[0].tools}
    assert announced["kit_add"] == "required" and announced["kit_greet"] == "forbidden"
