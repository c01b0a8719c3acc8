"""Tools that declare their calls short (``limits.inline``) run on the worker's event loop."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from bus.subjects import Header, Subjects
from schemas.codec import decode
from schemas.config import ComponentSettings, LimitsSettings
from schemas.wire import CallToolResult, ToolDescriptor
from tests.conftest import TESTKIT_WAT, deadline_in, text
from tests.workers.conftest import start_worker
from tests.workers.test_asks import ASK_LOOP_WAT
from workers.sandbox import CallContext
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService


class ThreadNoting:
    """The real testkit, noting the thread each call ran on (the service sees a component)."""

    def __init__(self, component: LoadedComponent) -> None:
        self._component = component
        self.threads: list[int] = []

    @property
    def name(self) -> str:
        return self._component.name

    @property
    def tools(self) -> Sequence[ToolDescriptor]:
        return self._component.tools

    @property
    def limits(self) -> LimitsSettings:
        return self._component.limits

    def call(
        self, tool_name: str, arguments: dict[str, object], timeout_s: float, context: CallContext | None = None
    ) -> CallToolResult:
        self.threads.append(threading.get_ident())
        return self._component.call(tool_name, arguments, timeout_s, context)


@pytest.fixture(scope="module")
def short_kit(engine_host: EngineHost, cache_dir: Path) -> LoadedComponent:
    settings = ComponentSettings(name="kit", path=TESTKIT_WAT, limits=LimitsSettings(inline=True, timeout_s=1.0))
    return LoadedComponent.load(engine_host, settings, TESTKIT_WAT, cache_dir)


@pytest.fixture
async def noted(
    nc: NatsClient, subjects: Subjects, short_kit: LoadedComponent
) -> AsyncIterator[tuple[WorkerService, ThreadNoting]]:
    component = ThreadNoting(short_kit)
    service = await start_worker(nc, subjects, component, concurrency=2)
    yield service, component
    await service.stop(grace_s=1)


async def test_a_short_tool_runs_on_the_event_loop(
    nc: NatsClient, subjects: Subjects, noted: tuple[WorkerService, ThreadNoting]
) -> None:
    service, component = noted
    reply = await nc.request(subjects.call("kit_add"), b'{"a":2,"b":3}', timeout=5)
    assert text(decode(reply.data, CallToolResult)) == "5"
    assert component.threads == [threading.get_ident()]  # the test's loop is the worker's
    assert service.accepted == 0  # admitted and released like a call run in a thread


async def test_a_tool_that_cannot_ask_runs_inline_even_when_its_caller_relays_questions(
    nc: NatsClient, subjects: Subjects, noted: tuple[WorkerService, ThreadNoting]
) -> None:
    # The gateway says Toolbus-Can-Ask for every client that declared a capability; the testkit
    # does not import toolbus:mcp/client, so its guest can never wait for an answer.
    _, component = noted
    headers = {Header.CAN_ASK: "elicitation"}
    reply = await nc.request(subjects.call("kit_add"), b'{"a":2,"b":3}', timeout=5, headers=headers)
    assert text(decode(reply.data, CallToolResult)) == "5"
    assert component.threads == [threading.get_ident()]


async def test_a_guest_that_may_ask_runs_in_a_thread_when_its_caller_relays_questions(
    nc: NatsClient, subjects: Subjects, engine_host: EngineHost, cache_dir: Path, tmp_path: Path
) -> None:
    # It waits for the answer in its thread; only the event loop can deliver it.
    wat = tmp_path / "asker.wat"
    wat.write_text(ASK_LOOP_WAT)
    settings = ComponentSettings(name="asker", path=wat, limits=LimitsSettings(inline=True, timeout_s=1.0))
    component = ThreadNoting(LoadedComponent.load(engine_host, settings, wat, cache_dir))
    service = await start_worker(nc, subjects, component, concurrency=2)
    try:
        reply = await nc.request(subjects.call("asker_ask_loop"), b'{"n":0}', timeout=5)
        assert decode(reply.data, CallToolResult).structured_content == 0  # no question: inline
        reply = await nc.request(
            subjects.call("asker_ask_loop"), b'{"n":1}', timeout=5, headers={Header.CAN_ASK: "roots"}
        )
        assert Header.QUESTION in (reply.headers or {})  # it asked, and waits in its thread
        assert component.threads[0] == threading.get_ident() != component.threads[1]
    finally:
        await service.stop(grace_s=0.5)


async def test_a_short_tool_that_spins_is_stopped_at_its_deadline_and_the_worker_goes_on(
    nc: NatsClient, subjects: Subjects, noted: tuple[WorkerService, ThreadNoting]
) -> None:
    reply = await nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=5, headers=deadline_in(0.3))
    result = decode(reply.data, CallToolResult)
    assert result.is_error and "time limit" in text(result)
    reply = await nc.request(subjects.call("kit_add"), b'{"a":2,"b":3}', timeout=5)
    assert text(decode(reply.data, CallToolResult)) == "5"


def test_a_tool_declared_short_must_have_a_short_time_limit() -> None:
    with pytest.raises(ValueError, match=r"inline: .*timeout_s must be at most 1 s \(it is 30 s\)"):
        LimitsSettings(inline=True)
    assert LimitsSettings(inline=True, timeout_s=0.5).inline
