"""Several gateways in front of one deployment: what a load balancer may do, proven with real processes.

The deployment is ``toolbus up`` (nats-server, registry, worker, gateway A) plus gateway B, a
second ``toolbus gateway`` process on the same NATS. Clients are the mcp SDK's ``Client``; the
load balancer is ``Balancer``, an HTTP transport under the client that sends each request to
one gateway as a load balancer would:

- 2026-07-28 is stateless: requests alternate between the gateways (round robin) and all of
  them succeed, tasks included (they live in JetStream, not in a gateway);
- 2025-11-25 sessions live in the gateway that created them (the SDK's session manager): a
  session id sent to the other gateway is answered 404, as the spec says for an unknown
  session, and the client starts a new session there. So a balancer routes 2025 requests by
  ``Mcp-Session-Id`` (sticky, learnt from the initialize response), and tasks still belong to
  their principal, not to a session: one created on A is read from a session on B;
- a publish reaches the clients of both gateways as ``tools/list_changed``.
See docs/deployment.md, "Several gateways".
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bus.embedded import free_port
from tests.conftest import eventually
from tests.e2e.conftest import (
    LEGACY_STREAM_SETTLE_S,
    REPO,
    Inbox,
    RunningSystem,
    answer_component,
    listening_client,
    toolbus,
)
from tests.gateway.mcp_tasks import (
    Acknowledged,
    CreatedTask,
    ModernCancelTask,
    TasksExtension,
    create_legacy,
    legacy_cancel,
    legacy_get,
    legacy_list,
    legacy_result,
    modern_get,
    poll_legacy,
    poll_modern,
)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
HEAR_TIMEOUT_S = 20.0
SPIN: tuple[str, dict[str, object]] = ("kit_danger_spin", {})
"""A guest that runs until it is cancelled."""
SESSION_HEADER = "mcp-session-id"


# -- the second gateway and the balancer -----------------------------------------------------------


@dataclass(frozen=True)
class Gateways:
    """The MCP URLs of gateway A (``toolbus up``'s) and gateway B (a process of its own)."""

    a: str
    b: str

    @property
    def urls(self) -> tuple[str, str]:
        return (self.a, self.b)


@pytest.fixture(scope="module")
def gateways(system: RunningSystem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    """Gateway B: ``toolbus gateway`` with the system's config on a port of its own; stopped after."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("gateway-b") / "gateway.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "gateway", "--config", str(system.config), "--port", str(port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        asyncio.run(_until_serving(url, process, log_path))
        yield Gateways(system.mcp_url, url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


async def _until_serving(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the gateway lists the example tools (its catalogue has loaded)."""

    def log_tail() -> str:
        return log_path.read_text()[-3000:]

    async def serving() -> bool:
        assert process.poll() is None, f"gateway B exited: {log_tail()}"
        try:
            async with Client(url, mode="auto", cache=None) as client:
                return "calc_add" in {tool.name for tool in (await client.list_tools()).tools}
        except Exception:  # not listening yet
            return False

    await eventually(serving, timeout_s=READY_TIMEOUT_S, interval_s=0.2, what=log_tail)


class Balancer(httpx2.AsyncBaseTransport):
    """A load balancer in front of the gateways, as the client's HTTP transport.

    Each request goes to the next gateway in turn (round robin). With ``sticky``, a request
    that carries ``Mcp-Session-Id`` goes to the gateway whose response issued that id, as
    HAProxy does with ``stick store-response res.hdr(mcp-session-id)`` and
    ``stick match req.hdr(mcp-session-id)``. ``sent`` records where each request went.
    """

    def __init__(self, urls: Sequence[str], *, sticky: bool) -> None:
        self._ports = [httpx2.URL(url).port for url in urls]
        self._turn = itertools.cycle(range(len(urls)))
        self._inner = httpx2.AsyncHTTPTransport()
        self.sticky = sticky
        self.owners: dict[str, int] = {}
        """Session id → the gateway (index) that issued it."""
        self.sent: list[tuple[int, str, int]] = []
        """(gateway index, HTTP method, status) of every request."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = request.headers.get(SESSION_HEADER)
        index = self.owners.get(session) if self.sticky and session else None
        if index is None:
            index = next(self._turn)
        request.url = request.url.copy_with(port=self._ports[index])
        response = await self._inner.handle_async_request(request)
        issued = response.headers.get(SESSION_HEADER)
        if issued:
            self.owners.setdefault(issued, index)
        self.sent.append((index, request.method, response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def reached(self) -> set[int]:
        """The gateways that answered a POST with 200."""
        return {index for index, method, status in self.sent if method == "POST" and status == 200}


FRONT_URL = "http://127.0.0.1:9/mcp"
"""What clients of a ``Balancer`` connect to: its port is replaced by a gateway's on every request."""


@asynccontextmanager
async def balanced(
    balancer: Balancer, mode: str, extensions: Sequence[ClientExtension] = (), **options: object
) -> AsyncIterator[Client]:
    """An SDK client whose every HTTP request goes through ``balancer``."""
    async with httpx2.AsyncClient(transport=balancer, timeout=httpx2.Timeout(30, read=300)) as http:
        transport = streamable_http_client(FRONT_URL, http_client=http)
        # No response cache: every tools/list must reach a gateway.
        async with Client(transport, mode=mode, extensions=list(extensions) or None, cache=None, **options) as client:  # type: ignore[arg-type]
            yield client


def texts(result: types.CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, types.TextContent)]


# -- 2026-07-28: any gateway -----------------------------------------------------------------------


async def test_2026_requests_alternating_between_gateways_all_succeed(gateways: Gateways) -> None:
    balancer = Balancer(gateways.urls, sticky=False)
    async with balanced(balancer, "auto") as client:
        assert client.protocol_version == "2026-07-28"
        for a in range(6):
            listed = await client.list_tools()
            assert {"calc_add", "kit_add"} <= {tool.name for tool in listed.tools}
            result = await client.call_tool("calc_add", {"a": a, "b": 1})
            assert not result.is_error and texts(result) == [str(a + 1)]
    posts = [index for index, method, _ in balancer.sent if method == "POST"]
    assert set(posts) == {0, 1} and all(status == 200 for _, _, status in balancer.sent)
    assert all(x != y for x, y in itertools.pairwise(posts)), "each request went to the other gateway"


async def test_2026_a_task_is_served_by_whichever_gateway_is_asked(gateways: Gateways) -> None:
    # Round robin: the task's creation, every tasks/get poll and the result alternate.
    balancer = Balancer(gateways.urls, sticky=False)
    extension = TasksExtension()
    async with balanced(balancer, "auto", [extension]) as client:
        result = await client.call_tool("kit_add", {"a": 20, "b": 22})
        assert result.structured_content == 42 and len(extension.resolved) == 1
    assert balancer.reached() == {0, 1}

    # Explicitly: created on A; read, cancelled and read again on B; read once more on A.
    async with AsyncExitStack() as stack:
        on_a = await stack.enter_async_context(Client(gateways.a, mode="auto", extensions=[TasksExtension()]))
        on_b = await stack.enter_async_context(Client(gateways.b, mode="auto", extensions=[TasksExtension()]))
        done = await on_a.session.call_tool("kit_add", {"a": 2, "b": 3}, allow_claimed=True)
        assert isinstance(done, CreatedTask)
        finished = await poll_modern(on_b.session, done.task_id, "completed")
        assert finished.result is not None and finished.result["structuredContent"] == 5

        spinning = await on_a.session.call_tool(*SPIN, allow_claimed=True)
        assert isinstance(spinning, CreatedTask)
        assert (await modern_get(on_b.session, spinning.task_id)).status == "working"
        cancel = ModernCancelTask(params=types.CancelTaskRequestParams(task_id=spinning.task_id))
        assert (await on_b.session.send_request(cancel, Acknowledged)).result_type == "complete"
        assert (await modern_get(on_a.session, spinning.task_id)).status == "cancelled"


# -- 2025-11-25: sticky sessions ---------------------------------------------------------------------


async def test_2025_a_session_id_is_unknown_to_the_other_gateway_which_answers_404(gateways: Gateways) -> None:
    only_a = Balancer([gateways.a], sticky=True)  # to read the session id off the wire
    async with balanced(only_a, "legacy") as on_a:
        await on_a.list_tools()
        [session_id] = only_a.owners
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
            "Mcp-Session-Id": session_id,
        }
        async with httpx2.AsyncClient(timeout=10) as http:
            elsewhere = await http.post(gateways.b, json=body, headers=headers)
            at_home = await http.post(gateways.a, json=body, headers=headers)
        assert elsewhere.status_code == 404
        assert at_home.status_code == 200 and "calc_add" in at_home.text
        # The session on A is untouched by B's refusal.
        assert (await on_a.call_tool("calc_add", {"a": 1, "b": 1})).content


async def test_2025_without_stickiness_a_session_breaks_and_a_new_one_carries_on(gateways: Gateways) -> None:
    # Round robin: initialize reaches one gateway, later requests of the session the other.
    balancer = Balancer(gateways.urls, sticky=False)
    refused: MCPError | None = None
    async with balanced(balancer, "legacy") as client:
        for _ in range(4):
            try:
                await client.list_tools()
            except MCPError as exc:
                refused = exc
                break
    assert refused is not None, balancer.sent
    assert refused.message == "Session not found"  # the 404's JSON-RPC error, as the SDK client reports it
    assert any(status == 404 for _, method, status in balancer.sent if method == "POST")
    # The spec's remedy: a new session (initialize without an id) wherever it lands.
    async with Client(gateways.b, mode="legacy") as fresh:
        assert (await fresh.call_tool("calc_add", {"a": 2, "b": 2})).content[0].text == "4"  # type: ignore[union-attr]


async def test_2025_sticky_sessions_spread_over_both_gateways_and_never_break(gateways: Gateways) -> None:
    balancer = Balancer(gateways.urls, sticky=True)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(balanced(balancer, "legacy")) for _ in range(4)]
        await asyncio.sleep(LEGACY_STREAM_SETTLE_S)  # their GET streams open too
        for round_ in range(3):
            for n, client in enumerate(clients):
                result = await client.call_tool("calc_add", {"a": n, "b": round_})
                assert texts(result) == [str(n + round_)]
    assert set(balancer.owners.values()) == {0, 1}, "initialize requests were spread"
    assert all(status in (200, 202) for _, _, status in balancer.sent), balancer.sent
    # Every request with a session id went to the gateway that issued it.
    assert not any(status == 404 for _, _, status in balancer.sent)


async def test_2025_a_task_created_in_a_session_on_one_gateway_is_read_from_a_session_on_the_other(
    gateways: Gateways,
) -> None:
    async with Client(gateways.a, mode="legacy") as on_a, Client(gateways.b, mode="legacy") as on_b:
        created = await create_legacy(on_a, "calc_add", {"a": 40, "b": 2})
        assert (await poll_legacy(on_b, created.task_id, "completed")).status == "completed"
        assert texts(await legacy_result(on_b, created.task_id)) == ["42"]
        assert created.task_id in [task.task_id for task in (await legacy_list(on_b)).tasks]

        spinning = await create_legacy(on_b, *SPIN)
        assert (await legacy_get(on_a, spinning.task_id)).status == "working"
        assert (await legacy_cancel(on_a, spinning.task_id)).status == "cancelled"
        assert (await legacy_get(on_b, spinning.task_id)).status == "cancelled"


# -- list changes reach every gateway's clients ---------------------------------------------------


@dataclass
class Listening:
    """A client of one gateway in one era, counting the list changes it hears."""

    gateway: str
    mode: str
    client: Client
    inbox: Inbox = field(default_factory=Inbox)


async def test_a_publish_reaches_the_clients_of_both_gateways(
    system: RunningSystem, gateways: Gateways, tmp_path: Path
) -> None:
    artifact = tmp_path / "several.wasm"
    artifact.write_bytes(answer_component(9))
    async with AsyncExitStack() as stack:
        listening = []
        for gateway, url in (("A", gateways.a), ("B", gateways.b)):
            for mode in ("legacy", "auto"):
                client, inbox = await listening_client(stack, url, mode)
                listening.append(Listening(gateway, mode, client, inbox))
        await asyncio.sleep(LEGACY_STREAM_SETTLE_S)
        toolbus(system, "publish", str(artifact), "--name", "several", "--version", "1.0.0")
        try:
            for each in listening:
                await eventually(lambda each=each: each.inbox.heard > 0, timeout_s=HEAR_TIMEOUT_S, what=repr(each))

                async def callable_here(each: Listening = each) -> bool:
                    try:
                        return texts(await each.client.call_tool("several_answer", {})) == ["9"]
                    except MCPError:  # not in this gateway's catalogue yet
                        return False

                await eventually(callable_here, timeout_s=HEAR_TIMEOUT_S, interval_s=0.1, what=repr(each))
        finally:
            toolbus(system, "retire", "several")
