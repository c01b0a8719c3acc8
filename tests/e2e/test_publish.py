"""Publishing into a running ``toolbus up``: MCP clients of both eras hear the change, see the
tool, call it; a new version swaps in under 20 concurrent MCP callers with zero failures;
rollback and retire work; all through the real CLI, gateway, registry and worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import mcp.types as types
from mcp import Client, MCPError

from tests.conftest import eventually
from tests.e2e.conftest import (
    LEGACY_STREAM_SETTLE_S,
    Inbox,
    RunningSystem,
    answer_component,
    listening_client,
    toolbus,
)

HEAR_TIMEOUT_S = 20.0


@asynccontextmanager
async def clients(system: RunningSystem) -> AsyncIterator[dict[str, tuple[Client, Inbox]]]:
    """A 2025 (legacy) and a 2026-07-28 (auto) client, each listening for list changes."""
    async with AsyncExitStack() as stack:
        connected = {}
        for mode in ("legacy", "auto"):
            connected[mode] = await listening_client(stack, system.mcp_url, mode)
        await asyncio.sleep(LEGACY_STREAM_SETTLE_S)
        yield connected


def text(result: types.CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, types.TextContent)
    return block.text


async def names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def listed(client: Client, name: str, *, present: bool) -> None:
    """Wait until ``tools/list`` does (or does not) show ``name``."""

    async def shown_as_asked() -> bool:
        return (name in await names(client)) == present

    what = f"{name} {'never appeared' if present else 'is still listed'}"
    await eventually(shown_as_asked, timeout_s=HEAR_TIMEOUT_S, interval_s=0.05, what=what)


async def test_publish_swap_rollback_and_retire_through_mcp(system: RunningSystem, tmp_path: Path) -> None:
    v1, v2 = tmp_path / "answer-1.wasm", tmp_path / "answer-2.wasm"
    v1.write_bytes(answer_component(1))
    v2.write_bytes(answer_component(2))
    async with clients(system) as connected:
        before = {mode: inbox.heard for mode, (_, inbox) in connected.items()}
        toolbus(system, "publish", str(v1), "--name", "e2e", "--version", "1.0.0")
        for mode, (client, inbox) in connected.items():
            await eventually(lambda inbox=inbox, mode=mode: inbox.heard > before[mode], timeout_s=HEAR_TIMEOUT_S)
            await listed(client, "e2e_answer", present=True)
            result = await client.call_tool("e2e_answer", {})
            # A 2025 client gets the text only: its structuredContent must be an object.
            assert not result.is_error and text(result) == "1", (mode, result)

        # Hot swap: 20 concurrent callers while 2.0.0 is published.
        client = connected["auto"][0]
        answers: list[object] = []
        failures: list[str] = []
        stop = asyncio.Event()

        async def caller() -> None:
            while not stop.is_set():
                try:
                    result = await client.call_tool("e2e_answer", {})
                except Exception as exc:  # recorded, and fails the test below
                    failures.append(repr(exc))
                    continue
                if result.is_error:
                    failures.append(str(result.content))
                else:
                    answers.append(result.structured_content)

        callers = [asyncio.create_task(caller()) for _ in range(20)]
        await eventually(lambda: len(answers) >= 50, timeout_s=HEAR_TIMEOUT_S)
        toolbus(system, "publish", str(v2), "--name", "e2e", "--version", "2.0.0")
        await eventually(lambda: answers[-40:] == [2] * 40, timeout_s=60)
        stop.set()
        await asyncio.gather(*callers)
        assert failures == []
        assert set(answers) == {1, 2}

        rolled = toolbus(system, "rollback", "e2e", "1.0.0")
        assert "e2e latest → 1.0.0" in rolled

        async def answers_1() -> bool:
            return (await client.call_tool("e2e_answer", {})).structured_content == 1

        await eventually(answers_1, timeout_s=10, interval_s=0.05, what="calls never went back to 1.0.0")

        heard = {mode: inbox.heard for mode, (_, inbox) in connected.items()}
        toolbus(system, "retire", "e2e")
        for mode, (client, inbox) in connected.items():
            await eventually(lambda inbox=inbox, mode=mode: inbox.heard > heard[mode], timeout_s=HEAR_TIMEOUT_S)
            await listed(client, "e2e_answer", present=False)


async def test_a_killed_worker_takes_its_tools_out_of_the_list_and_a_restarted_gateway_lists_them_at_once(
    system: RunningSystem, tmp_path: Path
) -> None:
    artifact = tmp_path / "lone.wasm"
    artifact.write_bytes(answer_component(7))
    toolbus(system, "publish", str(artifact), "--name", "lone", "--version", "1.0.0")
    async with Client(system.mcp_url, mode="auto") as client:
        await listed(client, "lone_answer", present=True)
        catalogue = await names(client)

        # Kill every worker `toolbus up` runs (one per core) as a crash would, and watch the list.
        # The supervisor is paused meanwhile: a worker it restarted before the registry's next
        # ping would announce the tool again, and the list would never show it gone.
        workers = system.children()["worker"]
        os.kill(system.process.pid, signal.SIGSTOP)
        try:
            killed_at = time.monotonic()
            for worker in workers:
                os.kill(worker, signal.SIGKILL)
            await listed(client, "lone_answer", present=False)
            gone_after_s = time.monotonic() - killed_at
            # The registry pings every 250 ms.
            assert gone_after_s < 3, gone_after_s
            started = time.monotonic()
            try:
                await client.call_tool("lone_answer", {})
            except MCPError:
                pass  # unknown tool, or no worker: either way at once, not at the deadline
            assert time.monotonic() - started < 2
        finally:
            os.kill(system.process.pid, signal.SIGCONT)
        # The restarted worker serves the package again.
        await listed(client, "lone_answer", present=True)

    # A gateway restarted while tools exist serves the whole catalogue in its first answer.
    os.kill(system.children()["gateway"][0], signal.SIGKILL)

    async def first_answer() -> set[str] | None:
        try:
            async with Client(system.mcp_url, mode="auto") as client:
                return await names(client)
        except Exception:  # the gateway is not listening yet
            return None

    first = await eventually(first_answer, timeout_s=60, interval_s=0.1, what="the gateway never came back")
    assert first == catalogue
    toolbus(system, "retire", "lone")
