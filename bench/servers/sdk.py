"""The baseline: the mcp SDK's ``MCPServer`` serving ``kit_add`` natively in Python.

Stateless JSON responses (``stateless_http=True, json_response=True``), uvicorn with uvloop and
httptools, logs at WARNING: the fastest way the SDK serves a tool. Both eras hit one URL; in
stateless mode a 2025-11-25 client's ``initialize`` succeeds without a session id, and later
requests carry just ``MCP-Protocol-Version: 2025-11-25``.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server import MCPServer
from starlette.applications import Starlette


def build_app() -> Starlette:
    """The SDK's Streamable HTTP app with one tool, ``kit_add`` (the testkit component's name for it)."""
    server = MCPServer("bench-sdk", log_level="WARNING")

    @server.tool(name="kit_add", description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    return server.streamable_http_app(json_response=True, stateless_http=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning")


if __name__ == "__main__":
    main()
