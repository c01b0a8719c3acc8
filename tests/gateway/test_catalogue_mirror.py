"""The gateway's catalogue mirror: sorted pages with stable cursors, fed by a watch on the real tools bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from nats.js.kv import KeyValue

from gateway.catalogue_mirror import (
    CatalogueChange,
    CatalogueMirror,
    CatalogueMirrorWatcher,
    decode_cursor,
    encode_cursor,
    tool_json,
)
from gateway.errors import InvalidCursor
from schemas.codec import encode
from schemas.wire import ToolDescriptor
from tests.gateway.responders import ADD, STATS, put_tools


def tool(name: str, description: str = "") -> ToolDescriptor:
    return ToolDescriptor(name=name, description=description, input_schema={"type": "object"})


async def eventually(catalogue: CatalogueMirror, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``condition`` holds, re-checking after each catalogue change."""
    changed = asyncio.Event()
    unsubscribe = catalogue.subscribe(lambda _change: changed.set())
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()


def test_pages_are_sorted_and_cursors_survive_changes() -> None:
    catalogue = CatalogueMirror()
    catalogue.replace([tool(n) for n in ("d", "b", "a", "c", "e")])
    first = catalogue.page(None, 2)
    assert [e.name for e in first.entries] == ["a", "b"]
    assert first.next_cursor is not None
    # A tool added before the cursor neither shifts nor repeats the next page.
    catalogue.put(tool("aa"))
    second = catalogue.page(first.next_cursor, 2)
    assert [e.name for e in second.entries] == ["c", "d"]
    assert second.next_cursor is not None
    last = catalogue.page(second.next_cursor, 2)
    assert [e.name for e in last.entries] == ["e"]
    assert last.next_cursor is None


def test_an_exact_last_page_has_no_cursor() -> None:
    catalogue = CatalogueMirror()
    catalogue.replace([tool("a"), tool("b")])
    assert catalogue.page(None, 2).next_cursor is None
    assert catalogue.page(None, 10).next_cursor is None
    assert CatalogueMirror().page(None, 10).entries == []


@pytest.mark.parametrize("cursor", ["", "!!!", "bm9wZQ", encode_cursor("a")[:-2] + "$$"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        CatalogueMirror().page(cursor, 10)


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor("calc_add")) == "calc_add"


def test_tools_that_would_break_tools_list_are_not_served() -> None:
    catalogue = CatalogueMirror()
    catalogue.replace(
        [
            tool("ok"),
            ToolDescriptor(name="array_input", input_schema={"type": "array"}),
            ToolDescriptor(name="bad_schema", input_schema={"type": "object", "properties": 3}),
            ToolDescriptor(name="has.dot", input_schema={"type": "object"}),
        ]
    )
    assert catalogue.names() == ["ok"]
    catalogue.put(ToolDescriptor(name="ok", input_schema={"type": "string"}))
    assert catalogue.names() == []


def test_listeners_hear_each_change_once() -> None:
    catalogue = CatalogueMirror()
    changes: list[CatalogueChange] = []
    unsubscribe = catalogue.subscribe(changes.append)
    catalogue.replace([tool("a"), tool("b")])
    catalogue.put(tool("a"))  # same descriptor: no change
    catalogue.put(tool("a", "new words"))
    catalogue.remove("b")
    catalogue.remove("b")
    catalogue.replace([tool("a", "new words"), tool("c")])
    unsubscribe()
    catalogue.put(tool("z"))
    assert changes == [
        CatalogueChange(added=("a", "b")),
        CatalogueChange(updated=("a",)),
        CatalogueChange(removed=("b",)),
        CatalogueChange(added=("c",)),
    ]


def test_entries_carry_a_compiled_validator() -> None:
    catalogue = CatalogueMirror()
    catalogue.put(ADD)
    entry = catalogue.get("add")
    assert entry is not None
    assert entry.validator.is_valid({"a": 1, "b": 2})
    assert not entry.validator.is_valid({"a": 1})


def test_entries_carry_each_eras_tool_json_and_survive_unchanged_updates() -> None:
    catalogue = CatalogueMirror()
    catalogue.replace([ADD, STATS])
    entry = catalogue.get("add")
    assert entry is not None
    assert entry.legacy_tool == tool_json(ADD, modern=False)
    assert entry.modern_tool == tool_json(ADD, modern=True)
    # Unchanged descriptors keep their entries, and so what was made from them.
    catalogue.put(ADD)
    catalogue.replace([ADD])
    assert catalogue.get("add") is entry
    catalogue.put(ToolDescriptor(name="add", description="changed", input_schema=ADD.input_schema))
    changed = catalogue.get("add")
    assert changed is not entry and changed is not None and changed.modern_tool["description"] == "changed"
    assert catalogue.input_schema("add") == ADD.input_schema
    assert catalogue.input_schema("nope") is None


async def test_the_watcher_loads_then_follows_puts_deletes_and_purges(kv: KeyValue) -> None:
    await put_tools(kv, ADD)
    await kv.put("junk", b"not json")
    await kv.put("misfiled", encode(tool("other")))
    catalogue = CatalogueMirror()
    changes: list[CatalogueChange] = []
    catalogue.subscribe(changes.append)
    watcher = CatalogueMirrorWatcher(kv, catalogue)
    watcher.start()
    try:
        await asyncio.wait_for(catalogue.loaded.wait(), 5)
        assert catalogue.names() == ["add"]
        assert changes == [CatalogueChange(added=("add",))]

        await put_tools(kv, STATS)
        await eventually(catalogue, lambda: "stats" in catalogue)
        await kv.put("stats", encode(ToolDescriptor(name="stats", description="v2", input_schema={"type": "object"})))
        await eventually(
            catalogue, lambda: (e := catalogue.get("stats")) is not None and e.descriptor.description == "v2"
        )
        await kv.delete("add")
        await eventually(catalogue, lambda: "add" not in catalogue)
        await kv.purge("stats")
        await eventually(catalogue, lambda: len(catalogue) == 0)
        assert changes[1:] == [
            CatalogueChange(added=("stats",)),
            CatalogueChange(updated=("stats",)),
            CatalogueChange(removed=("add",)),
            CatalogueChange(removed=("stats",)),
        ]
    finally:
        await watcher.stop()


async def test_an_empty_bucket_still_counts_as_loaded(kv: KeyValue) -> None:
    catalogue = CatalogueMirror()
    watcher = CatalogueMirrorWatcher(kv, catalogue)
    watcher.start()
    try:
        await asyncio.wait_for(catalogue.loaded.wait(), 5)
        assert len(catalogue) == 0
    finally:
        await watcher.stop()


async def test_a_restarted_watch_drops_tools_deleted_meanwhile(kv: KeyValue) -> None:
    await put_tools(kv, ADD, STATS)
    catalogue = CatalogueMirror()
    first = CatalogueMirrorWatcher(kv, catalogue)
    first.start()
    await asyncio.wait_for(catalogue.loaded.wait(), 5)
    await first.stop()
    await kv.delete("add")
    catalogue.loaded.clear()
    second = CatalogueMirrorWatcher(kv, catalogue)
    second.start()
    try:
        await asyncio.wait_for(catalogue.loaded.wait(), 5)
        assert catalogue.names() == ["stats"]
    finally:
        await second.stop()
