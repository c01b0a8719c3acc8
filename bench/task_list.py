"""``tasks/list`` cost: one page of 100 among 500 tasks, read two ways in the same run.

- *keys + a get per key*: what ``TaskStore.list`` did before (the baseline);
- *one snapshot*: ``TaskStore.list`` now (one server-filtered watch carrying the values).

Run: ``.venv/bin/python -m bench.task_list`` (starts its own nats-server; ~10 s).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bus.connection import connect
from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from schemas.codec import decode
from schemas.wire import TaskRecord
from stores import TaskStore

TASKS = 500
PAGE = 100
RUNS = 7


async def _keys_then_gets(store: TaskStore) -> list[TaskRecord]:
    records = []
    for key in await store.kv.keys():
        entry = await store.kv.get(key)
        if entry.value:
            records.append(decode(entry.value, TaskRecord))
    records.sort(key=lambda r: (-r.created_at, r.task_id))
    return records[:PAGE]


async def _median_ms(read: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main() -> None:
    server = EmbeddedNatsServer(state_dir=Path(tempfile.mkdtemp(prefix="bench-task-list-")))
    server.start()
    try:
        nc = await connect(server.url, name="bench-task-list")
        store = await TaskStore.open(nc, Subjects("benchtasks"))
        for _ in range(TASKS):
            await store.submit("kit_add", {"a": 1}, principal="p")
        baseline = await _median_ms(lambda: _keys_then_gets(store))
        now = await _median_ms(lambda: store.list(principal="p", limit=PAGE))
        print(f"{TASKS} tasks, one page of {PAGE}, median of {RUNS} runs:")
        print(f"  keys + a get per key (baseline)  {baseline:7.1f} ms")
        print(f"  one snapshot (TaskStore.list)    {now:7.1f} ms   {baseline / now:.1f}x faster")
        await nc.close()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
