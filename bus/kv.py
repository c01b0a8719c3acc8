"""Reading many keys of a JetStream KV bucket in one pass."""

from __future__ import annotations

import asyncio
from typing import Final

from nats.js.kv import KeyValue

from bus.errors import nats_boundary

SNAPSHOT_TIMEOUT_S: Final = 30.0
"""Upper bound on reading a bucket's current values (a bucket of 10,000 keys takes well under 1 s)."""


async def snapshot(kv: KeyValue, pattern: str = ">") -> list[tuple[str, bytes]]:
    """(key, value) of the live keys matching the subject ``pattern``, read in one pass.

    A watch filters by subject on the server and carries the values, so there is no read per
    key (nats-py's ``keys(filters=…)`` lists every key and matches substrings).

    The end is the entry with nothing pending after it (``delta == 0``), not nats-py's ``None``
    marker: nats-py puts that marker first when the server has pushed every value before its
    consumer-info answer came back but none has been handed over yet, and a snapshot ending there
    would be empty (seen once, under load, as a ``tasks/list`` missing a task just created).
    Deletes are read too (and skipped here), so the last message always arrives as an entry.

    Raises:
        TimeoutError: the values did not arrive within ``SNAPSHOT_TIMEOUT_S``.
        BusError: NATS failed the watch, such as ``ConnectionClosed``.
    """
    with nats_boundary:
        watcher = await kv.watch(pattern)
        entries: dict[str, bytes] = {}
        try:
            async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):
                async for entry in watcher:
                    if entry is None:
                        if not entries and await _nothing_delivered(watcher):
                            break  # the bucket holds nothing matching
                        continue
                    if entry.operation is None and entry.value:
                        entries[entry.key] = entry.value
                    else:
                        entries.pop(entry.key, None)
                    if entry.delta == 0:
                        break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    return list(entries.items())


async def _nothing_delivered(watcher: object) -> bool:
    """True when the watch's consumer has delivered no message at all: the bucket is empty."""
    subscription = getattr(watcher, "_sub")  # noqa: B009 (nats-py exposes no public handle)
    info = await subscription.consumer_info()
    return not info.delivered or not info.delivered.consumer_seq
