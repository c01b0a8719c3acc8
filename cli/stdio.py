"""``toolbus stdio``: MCP over stdin/stdout for desktop clients, relayed to a toolbus gateway
(the relay itself: ``cli.stdio_relay``).

Claude Desktop, Cursor, Zed and most IDEs start MCP servers as a child process and speak to it
over stdio. This verb is that child: every JSON-RPC message it reads on stdin goes to the gateway
over Streamable HTTP (the mcp SDK's client transport), and every message the gateway sends back
(results, progress, logs, list changes, the gateway's own requests such as elicitation) is written
to stdout.

It relays through a gateway rather than speaking NATS itself, so a desktop user is an MCP client
like any other: the same authentication (``--token``), policy, rate limits and audit trail, and
every MCP feature the gateway serves, with nothing implemented twice. It relays messages, not
meanings: the client's own era decides the protocol (a 2025-11-25 client's ``initialize``
opens a session; a 2026-07-28 client's requests are stateless), and the relay adds only the HTTP
headers that era needs: ``MCP-Protocol-Version`` after the handshake, and for 2026-07-28
requests ``Mcp-Method``, ``Mcp-Name`` and the ``Mcp-Param-*`` mirrors of ``x-mcp-header``
arguments (from the tool schemas it has relayed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final

from schemas.environment import mcp_token_from_env, mcp_url_from_env

DEFAULT_URL: Final = "http://127.0.0.1:3001/mcp"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``stdio`` verb."""
    parser = subparsers.add_parser(
        "stdio",
        help="serve MCP on stdin/stdout for desktop clients, relayed to a toolbus gateway",
        description="MCP over stdio (for Claude Desktop, Cursor, ...), relayed to a gateway's Streamable HTTP.",
    )
    parser.add_argument("--url", help=f"the gateway's MCP endpoint (default: $TOOLBUS_MCP_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", help="API key or JWT for the gateway (default: $TOOLBUS_TOKEN)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Relay until the client closes stdin."""
    url = args.url or mcp_url_from_env() or DEFAULT_URL
    token = args.token or mcp_token_from_env()
    # stdout is the wire: the SDK's and httpx's log records go to stderr, warnings only.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    import anyio

    from cli.stdio_relay import relay  # the mcp SDK loads only when the verb runs

    anyio.run(relay, url, token)
    return 0
