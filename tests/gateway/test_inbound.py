"""The one reading of a POST body (``gateway.inbound``): a case per kind of odd JSON, and a
differential check against the parsers the mcp SDK would use on the same bytes.

The SDK parses a 2026-07-28 body with ``json.loads`` and a 2025-era one with
``pydantic_core.from_json``. The gateway hands the SDK ``Inbound.canonical`` instead of the
client's bytes, so the property that matters is: whatever our parser accepts, both SDK parsers
read the canonical body as exactly the message we judged (same method, same tool, same task
request) — and whatever our parser refuses never reaches them. tests/gateway/test_pipeline.py
sends the same corpus through a real deployment.
"""

from __future__ import annotations

import json

import pydantic_core
import pytest

from gateway.inbound import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    Inbound,
    ParseRejected,
    parse,
)
from tests.gateway.odd_json import MODERN, ODD_BODIES, body, deep

REFUSED: dict[str, int] = {
    "overflowing float in _meta": PARSE_ERROR,
    "negative overflow": PARSE_ERROR,
    "NaN": PARSE_ERROR,
    "Infinity": PARSE_ERROR,
    "-Infinity": PARSE_ERROR,
    "5000-digit integer": PARSE_ERROR,
    "BOM": PARSE_ERROR,
    "UTF-16": PARSE_ERROR,
    "lone surrogate": PARSE_ERROR,
    "100000-deep": PARSE_ERROR,
    "just too deep": PARSE_ERROR,
    "batch": INVALID_REQUEST,
    "empty batch": INVALID_REQUEST,
    "string": INVALID_REQUEST,
    "no jsonrpc": INVALID_REQUEST,
    "boolean id": INVALID_REQUEST,
    "float id": INVALID_REQUEST,
    "params a list": INVALID_REQUEST,
    "trailing garbage": PARSE_ERROR,
    "name not a string": INVALID_PARAMS,
}
"""What the parser refuses, and with which JSON-RPC error (the rest it accepts)."""


@pytest.mark.parametrize("case", sorted(ODD_BODIES))
@pytest.mark.parametrize("protocol_version", [None, MODERN])
def test_each_odd_body_is_refused_with_its_error_or_read_once(case: str, protocol_version: str | None) -> None:
    raw = ODD_BODIES[case]
    if case in REFUSED:
        with pytest.raises(ParseRejected) as refused:
            parse(raw, protocol_version, None)
        assert refused.value.code == REFUSED[case], refused.value.message
        return
    inbound = parse(raw, protocol_version, None)
    assert inbound.modern == (protocol_version == MODERN)
    assert_sdk_reads_what_we_judged(inbound)


def assert_sdk_reads_what_we_judged(inbound: Inbound) -> None:
    """Both SDK parsers read the canonical body as the very message we decided on."""
    for sdk_parse in (json.loads, pydantic_core.from_json):
        seen = sdk_parse(inbound.canonical)
        assert seen == inbound.message
        assert seen.get("method") == inbound.method
        if inbound.tool is not None:
            assert seen["params"]["name"] == inbound.tool


def test_duplicate_keys_mean_the_last_one_for_every_layer() -> None:
    inbound = parse(ODD_BODIES["duplicate name, forbidden last"], MODERN, None)
    assert inbound.tool == "kit_divide"
    assert b"kit_add" not in inbound.canonical  # the SDK never sees the other name
    assert parse(ODD_BODIES["duplicate method"], MODERN, None).tool == "kit_divide"
    # A task asked for and then withdrawn by a second key is no task, for everyone.
    assert not parse(ODD_BODIES["duplicate task"], None, None).creates_task


def test_escaped_names_are_the_names_they_spell() -> None:
    assert parse(ODD_BODIES["escaped tool name"], MODERN, None).tool == "kit_divide"
    assert parse(ODD_BODIES["escaped method"], MODERN, None).method == "tools/call"
    assert parse(ODD_BODIES["escaped key"], MODERN, None).tool == "kit_divide"


def test_big_integers_are_kept_exactly() -> None:
    inbound = parse(ODD_BODIES["huge integer id"], None, None)
    assert inbound.id == 10**40
    assert json.loads(inbound.canonical)["id"] == 10**40


def test_a_task_is_one_notion_across_eras() -> None:
    modern_task = ODD_BODIES["2026 task"]
    legacy_task = ODD_BODIES["2025 task"]
    # Served as a task in its own era...
    assert parse(modern_task, MODERN, None).creates_task
    assert parse(legacy_task, None, None).creates_task
    # ...and refused by a tasks = false rule in either era, whatever the header says.
    for raw in (modern_task, legacy_task):
        for version in (None, "2025-11-25", MODERN):
            assert parse(raw, version, None).asks_for_task
    assert not parse(ODD_BODIES["plain call"], MODERN, None).uses_tasks
    tasks_get = body({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": "t"}})
    assert parse(tasks_get, MODERN, None).uses_tasks


def test_the_parser_never_recurses_itself_out() -> None:
    for levels in (10**3, 10**4, 10**5, 10**6):
        with pytest.raises(ParseRejected) as refused:
            parse(deep(levels), None, None)
        assert refused.value.code == PARSE_ERROR
    wide = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"x":[' + b"[]," * 100_000 + b"[]]}}}"
    assert parse(wide, MODERN, None).method == "tools/list"  # many brackets, shallow: accepted


def test_a_2025_initialize_without_a_session_opens_one() -> None:
    initialize = body({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert parse(initialize, None, None).opens_session
    assert parse(initialize, "2025-11-25", None).opens_session
    assert not parse(initialize, "2025-11-25", "abc").opens_session
    assert not parse(initialize, MODERN, None).opens_session


def _request(method: str, params: dict[str, object]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("resources/read", {"uri": ["test://x"]}),
        ("resources/read", {}),
        ("resources/subscribe", {"uri": 1}),
        ("prompts/get", {"name": {"n": 1}}),
        ("completion/complete", {"ref": {"type": "ref/prompt"}, "argument": {"name": "a", "value": ""}}),
        ("completion/complete", {"ref": "test_p", "argument": {"name": "a", "value": ""}}),
        ("subscriptions/listen", {"notifications": {"resourceSubscriptions": "test://x"}}),
        ("subscriptions/listen", {"notifications": {"resourceSubscriptions": [1]}}),
    ],
)
def test_a_request_must_name_its_resource_or_prompt_with_a_string(method: str, params: dict[str, object]) -> None:
    with pytest.raises(ParseRejected) as caught:
        parse(_request(method, params), MODERN if method == "subscriptions/listen" else None, None)
    assert caught.value.code == INVALID_PARAMS


def test_the_resource_or_prompt_each_request_names_is_read_once() -> None:
    def targets(method: str, params: dict[str, object], version: str | None = None) -> list[tuple[str, str]]:
        return [(t.kind, t.name) for t in parse(_request(method, params), version, None).surface_targets]

    escaped = b'{"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "test://\\u0078"}}'
    assert [(t.kind, t.name) for t in parse(escaped, None, None).surface_targets] == [("resource", "test://x")]
    assert targets("resources/subscribe", {"uri": "test://x"}) == [("resource", "test://x")]
    assert targets("prompts/get", {"name": "test_p"}) == [("prompt", "test_p")]
    ref = {"type": "ref/resource", "uri": "test://{id}"}
    assert targets("completion/complete", {"ref": ref, "argument": {}}) == [("template", "test://{id}")]
    listen = {"notifications": {"resourceSubscriptions": ["a://1", "b://2"]}}
    assert targets("subscriptions/listen", listen, MODERN) == [("resource", "a://1"), ("resource", "b://2")]
    # 2026-07-28 removed resources/subscribe: left to the SDK (404), not judged or refused here.
    assert targets("resources/subscribe", {}, MODERN) == []
    assert targets("tools/list", {}) == []
