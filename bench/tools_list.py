"""``tools/list`` with 1,000 registered tools: first page and full pagination, both eras.

The tools are written the way the registry writes them: ``ToolDescriptor``s encoded by
``schemas.codec`` into the tools KV bucket the gateway watches. Once the gateway lists them all,
one client (keep-alive, sequential) times the first page and then whole paginated listings;
a 2025-11-25 client does its handshake once and lists on that session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

import nats

from bench.mcp_http import ERAS, McpClient
from bench.plan import Plan
from bench.stats import summary
from bus.subjects import Subjects
from schemas.codec import encode
from schemas.wire import ToolDescriptor

NAME_FORMAT: Final = "bench_tool_{:04d}"
VISIBLE_TIMEOUT_S: Final = 60.0

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


async def register(nats_url: str, subjects: Subjects, count: int) -> None:
    """Put ``count`` descriptors into the tools bucket."""
    nc = await nats.connect(nats_url, name="bench-tools-list")
    try:
        kv = await nc.jetstream().key_value(subjects.tools_bucket)
        for index in range(count):
            await kv.put(NAME_FORMAT.format(index), encode(descriptor(index)))
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
    """Register the tools, wait until the gateway lists them, time both eras."""
    client = McpClient(url, ERAS[1])
    before, _ = full_listing(client)
    client.close()
    started = time.perf_counter()
    asyncio.run(register(nats_url, subjects, plan.list_tools))
    listed = _wait_until_listed(url, before + plan.list_tools)
    progress(
        f"{plan.list_tools} tools registered; the gateway lists {listed} after {time.perf_counter() - started:.1f} s"
    )
    eras = []
    for era in ERAS:
        row = _time_era(url, era, plan)
        eras.append(row)
        progress(
            f"tools/list {era}: first page p50 {row['first_page_ms']['p50']:.2f} ms, "
            f"full listing ({row['pages']} pages, {row['tools']} tools) p50 {row['full_listing_ms']['p50']:.1f} ms"
        )
    return {"registered": plan.list_tools, "listed": listed, "eras": eras}
