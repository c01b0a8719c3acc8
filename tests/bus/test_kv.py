"""``bus.kv.snapshot`` against a real nats-server: values, deletes, patterns, an empty bucket."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from bus.kv import snapshot
from bus.provisioning import ensure_bucket


async def test_a_snapshot_holds_exactly_the_live_keys_matching_its_pattern(nc: NatsClient) -> None:
    kv = await ensure_bucket(nc, "snapshot_test")
    assert await snapshot(kv) == []  # empty: ends at once, no wait for values that never come
    for i in range(40):
        await kv.put(f"a.{i}", f"v{i}".encode())
    await kv.put("b.x", b"other")
    await kv.put("a.3", b"rewritten")
    await kv.delete("a.7")
    await kv.purge("a.8")
    got = dict(await snapshot(kv, "a.>"))
    expected = {f"a.{i}": f"v{i}".encode() for i in range(40) if i not in (7, 8)}
    assert got == {**expected, "a.3": b"rewritten"}
    assert dict(await snapshot(kv, "b.*")) == {"b.x": b"other"}
    for i in range(40):
        await kv.delete(f"a.{i}")
    assert await snapshot(kv, "a.>") == []  # only deletes left: the last one still ends the read
    for _ in range(50):  # repeated reads all see everything (the end is the last entry, not a marker)
        assert len(await snapshot(kv)) == 1
