"""``tools/list`` with 1,000 registered tools: first page and full pagination, both eras.

The tools reach the gateway the way a worker's do: the bench announces them as a worker
(``WorkerAnnouncement`` on the announce subject, re-sent while it measures, ``stopped`` at the end;
it answers the registry's pings as a worker does),
the registry writes them into the tools KV bucket and the gateway's mirror picks them up. Writing
the bucket directly does not work: the registry keeps it to exactly what live workers serve and
deletes the rest. Once the gateway lists them all, one client (keep-alive, sequential) times the
first page and then whole paginated listings; a 2025-11-25 client does its handshake once and
lists on that session. If the gateway never lists them, the section fails rather than time a
shorter listing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import nats
from nats.aio.msg import Msg

from bench.mcp_http import ERAS, McpClient
from bench.plan import Plan
from bench.stats import summary
from bus.subjects import Subjects
from schemas.codec import encode
from schemas.wire import ToolDescriptor, WorkerAnnouncement

NAME_FORMAT: Final = "bench_tool_{:04d}"
VISIBLE_TIMEOUT_S: Final = 60.0
ANNOUNCE_EVERY_S: Final = 1.0
"""Well inside the registry's liveness window (a few of the bench config's announce intervals)."""
WORKER_ID: Final = "bench-tools-list"

Progress = Callable[[str], None]


def descriptor(index: int) -> ToolDescriptor:
    """A tool shaped like a real one: two typed parameters, a description, an output schema."""
    return ToolDescriptor(
        name=NAME_FORMAT.format(index),
        description=f"Benchmark tool number {index}: adds two integers and returns their sum.",
        input_schema={
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "First addend."},
                "b": {"type": "integer", "description": "Second addend."},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        output_schema={"type": "integer"},
        component="bench",
        export=f"add-{index}",
        digest="sha256:" + "0" * 64,
    )


class Announcer:
    """A worker, as far as the registry can tell, serving ``count`` tools until ``stop``.

    It runs its own event loop on a thread, so the timing client beside it stays plain and
    synchronous; between announcements it only sleeps.
    """

    def __init__(self, nats_url: str, subjects: Subjects, count: int) -> None:
        self._nats_url = nats_url
        self._subject = subjects.announce
        self._ping_subject = subjects.worker_ping(WORKER_ID)
        self._tools = [descriptor(index) for index in range(count)]
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-announcer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Announce ``stopped`` (the registry removes the tools) and wait for the thread.

        Raises:
            RuntimeError: announcing failed (what failed is chained).
        """
        self._stopping.set()
        self._thread.join(timeout=10.0)
        if self._failure is not None:
            raise RuntimeError("announcing the benchmark's tools failed") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._announce())
        except BaseException as exc:  # reported by stop(), on the measuring thread
            self._failure = exc

    async def _announce(self) -> None:
        nc = await nats.connect(self._nats_url, name="bench-tools-list")

        async def pong(msg: Msg) -> None:
            if msg.reply:
                await nc.publish(msg.reply, b"")

        try:
            # The registry pings every worker it knows and forgets one nobody answers for: the
            # tools would leave the catalogue and come back with the next announcement.
            await nc.subscribe(self._ping_subject, cb=pong)
            while not self._stopping.is_set():
                await nc.publish(self._subject, encode(WorkerAnnouncement(worker_id=WORKER_ID, tools=self._tools)))
                await nc.flush()
                await asyncio.to_thread(self._stopping.wait, ANNOUNCE_EVERY_S)
            stopped = WorkerAnnouncement(worker_id=WORKER_ID, tools=self._tools, state="stopped")
            await nc.publish(self._subject, encode(stopped))
            await nc.flush()
        finally:
            await nc.close()


def full_listing(client: McpClient) -> tuple[int, int]:
    """List every page; return (tools, pages)."""
    tools = pages = 0
    cursor = None
    while True:
        page = client.list_tools(cursor)
        tools += len(page.get("tools", []))
        pages += 1
        cursor = page.get("nextCursor")
        if not cursor:
            return tools, pages


def _wait_until_listed(url: str, at_least: int) -> int:
    client = McpClient(url, ERAS[1])
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    try:
        while True:
            tools, _ = full_listing(client)
            if tools >= at_least or time.monotonic() > deadline:
                return tools
            time.sleep(0.2)
    finally:
        client.close()


def _time_era(url: str, era: str, plan: Plan) -> dict[str, Any]:
    client = McpClient(url, era)
    client.handshake()
    try:
        for _ in range(10):
            client.list_tools()
        full_listing(client)
        first_page = []
        for _ in range(plan.list_first_page_samples):
            started = time.perf_counter()
            page = client.list_tools()
            first_page.append(time.perf_counter() - started)
        page_size = len(page.get("tools", []))
        full, tools, pages = [], 0, 0
        for _ in range(plan.list_full_samples):
            started = time.perf_counter()
            tools, pages = full_listing(client)
            full.append(time.perf_counter() - started)
    finally:
        client.end_session()
        client.close()
    return {
        "era": era,
        "page_size": page_size,
        "tools": tools,
        "pages": pages,
        "first_page_ms": summary(first_page, 1000.0),
        "full_listing_ms": summary(full, 1000.0),
    }


def measure(url: str, nats_url: str, subjects: Subjects, plan: Plan, progress: Progress) -> dict[str, Any]:
    """Announce the tools, wait until the gateway lists them, time both eras.

    Raises:
        RuntimeError: the gateway did not list the announced tools within ``VISIBLE_TIMEOUT_S``.
    """
    client = McpClient(url, ERAS[1])
    before, _ = full_listing(client)
    client.close()
    started = time.perf_counter()
    announcer = Announcer(nats_url, subjects, plan.list_tools)
    announcer.start()
    try:
        listed = _wait_until_listed(url, before + plan.list_tools)
        if listed < before + plan.list_tools:
            raise RuntimeError(
                f"the gateway lists {listed} tools {VISIBLE_TIMEOUT_S:.0f} s after {plan.list_tools} were "
                f"announced (it listed {before} before): nothing to time"
            )
        progress(
            f"{plan.list_tools} tools announced; the gateway lists {listed} after {time.perf_counter() - started:.1f} s"
        )
        eras = []
        for era in ERAS:
            row = _time_era(url, era, plan)
            eras.append(row)
            progress(
                f"tools/list {era}: first page p50 {row['first_page_ms']['p50']:.2f} ms, "
                f"full listing ({row['pages']} pages, {row['tools']} tools) p50 {row['full_listing_ms']['p50']:.1f} ms"
            )
    finally:
        announcer.stop()
    return {"registered": plan.list_tools, "listed": listed, "eras": eras}
