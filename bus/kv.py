"""Reading many keys of a JetStream KV bucket in one pass."""

from __future__ import annotations

from nats.js.kv import KeyValue


async def snapshot(kv: KeyValue, pattern: str = ">") -> list[tuple[str, bytes]]:
    """(key, value) of the live keys matching the subject ``pattern``, read in one pass.

    A watch filters by subject on the server and carries the values, so there is no read per
    key (nats-py's ``keys(filters=…)`` lists every key and matches substrings).
    """
    watcher = await kv.watch(pattern, ignore_deletes=True)
    entries = []
    try:
        async for entry in watcher:
            if entry is None:  # nats-py's marker: every current value has been delivered
                break
            if entry.value:
                entries.append((entry.key, entry.value))
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return entries
