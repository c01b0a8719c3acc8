"""The baseline: the mcp SDK's ``MCPServer`` serving the bench's tools natively in Python.

``kit_add`` here is the baseline of every tool the HTTP section calls through toolbus (``kit_add``
from the WAT testkit, ``calc_add`` from examples/calc, and both declared pure): its ``add`` does
what both guests do: two WIT ``s32`` arguments
(range-checked, as toolbus checks them against the tool's JSON Schema) and a sum wrapped to 32
bits (the WAT testkit's ``i32.add``; examples/calc wraps the same way in Python). The SDK has
no sandbox, so it has no instance to keep warm: the pure variants compare with it too.

Stateless JSON responses (``stateless_http=True, json_response=True``), uvicorn with uvloop and
httptools, logs at WARNING: the fastest way the SDK serves a tool. Both eras hit one URL; in
stateless mode a 2025-11-25 client's ``initialize`` succeeds without a session id, and later
requests carry just ``MCP-Protocol-Version: 2025-11-25``.
"""

from __future__ import annotations

import argparse
from typing import Annotated

import uvicorn
from mcp.server import MCPServer
from pydantic import Field
from starlette.applications import Starlette

TOOLS = ("kit_add",)
"""The names ``add`` is served under (the WAT testkit's name for it)."""
S32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
"""A WIT ``s32``."""


def add(a: S32, b: S32) -> int:
    """Sum of two s32 values, wrapped to 32 bits like the WIT type (as examples/calc/app.py does)."""
    total = (a + b) & 0xFFFF_FFFF
    return total - 0x1_0000_0000 if total >= 0x8000_0000 else total


def build_app() -> Starlette:
    """The SDK's Streamable HTTP app serving ``add`` under every name in ``TOOLS``."""
    server = MCPServer("bench-sdk", log_level="WARNING")
    for name in TOOLS:
        server.tool(name=name, description="Add two 32-bit integers and return their sum (wrapping on overflow).")(add)
    return server.streamable_http_app(json_response=True, stateless_http=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning")


if __name__ == "__main__":
    main()
