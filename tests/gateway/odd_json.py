"""The corpus of odd JSON bodies: every class the gateway-pipeline issue names, and controls.

Shared by the parser's own tests (tests/gateway/test_inbound.py) and the ones that send it
through a real deployment (tests/gateway/test_pipeline.py).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.inbound import MAX_DEPTH, TASKS_EXTENSION

MODERN = "2026-07-28"


def call(name: str = "kit_add", **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}, **params}}


def body(message: Any) -> bytes:
    return json.dumps(message).encode()


def deep(levels: int) -> bytes:
    """A tools/call whose ``_meta.x`` nests ``levels`` arrays."""
    return b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kit_add","_meta":{"x":' + (
        b"[" * levels + b"]" * levels + b"}}}"
    )


ODD_BODIES: dict[str, bytes] = {
    "overflowing float in _meta": body(call())[:-2] + b',"_meta":{"x":1e400}}}',
    "negative overflow": body(call())[:-2] + b',"_meta":{"x":-1e400}}}',
    "NaN": body(call())[:-2] + b',"_meta":{"x":NaN}}}',
    "Infinity": body(call())[:-2] + b',"_meta":{"x":Infinity}}}',
    "-Infinity": body(call())[:-2] + b',"_meta":{"x":-Infinity}}}',
    "4000-digit integer": body(call())[:-2] + b',"_meta":{"x":1' + b"0" * 4000 + b"}}}",
    "5000-digit integer": body(call())[:-2] + b',"_meta":{"x":1' + b"0" * 5000 + b"}}}",
    "huge integer id": b'{"jsonrpc":"2.0","id":1' + b"0" * 40 + b',"method":"tools/call","params":{"name":"kit_add"}}',
    "duplicate name, forbidden last": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name":"kit_add","name":"kit_divide","arguments":{}}}',
    "duplicate name, forbidden first": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name":"kit_divide","name":"kit_add","arguments":{}}}',
    "duplicate params": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kit_divide"},'
    b'"params":{"name":"kit_add"}}',
    "duplicate method": b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call",'
    b'"params":{"name":"kit_divide"}}',
    "escaped tool name": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kit_\\u0064ivide"}}',
    "escaped key": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"na\\u006de":"kit_divide"}}',
    "escaped method": b'{"jsonrpc":"2.0","id":1,"method":"tools\\/call","params":{"name":"kit_divide"}}',
    "duplicate task": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kit_add",'
    b'"task":{"ttl":1000},"task":null}}',
    "BOM": b"\xef\xbb\xbf" + body(call("kit_divide")),
    "UTF-16": body(call("kit_divide")).decode().encode("utf-16"),
    "lone surrogate": body(call())[:-2] + b',"_meta":{"x":"\\ud800"}}}',
    "100000-deep": deep(100_000),
    "just too deep": deep(MAX_DEPTH),
    "deep enough": deep(MAX_DEPTH - 5),
    "batch": body([call("kit_divide"), call()]),
    "empty batch": b"[]",
    "string": b'"tools/call"',
    "no jsonrpc": body({"id": 1, "method": "tools/call", "params": {"name": "kit_divide"}}),
    "boolean id": body({**call("kit_divide"), "id": True}),
    "float id": body({**call("kit_divide"), "id": 1.5}),
    "params a list": body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ["kit_divide"]}),
    "name not a string": body(call(name=7)),  # type: ignore[arg-type]
    "trailing garbage": body(call("kit_divide")) + b"]",
    "whitespace around": b" \n\t" + body(call("kit_divide")) + b"\r\n ",
    "2026 task": body(
        call(_meta={"io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}}})
    ),
    "2025 task": body(call(task={"ttl": 1000})),
    "notification": body({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    "response": body({"jsonrpc": "2.0", "id": 5, "result": {}}),
    "plain call": body(call()),
}
"""Every class of odd body the issue names (and a few plain ones as controls)."""
