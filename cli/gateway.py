"""The ``toolbus gateway`` verb: serve MCP over Streamable HTTP against an existing NATS."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from bus.errors import BusUnavailable
from cli import lifecycle
from cli.logs import configure_logging
from cli.options import add_common_options, settings_from_args

EXIT_CONFIG = 2
"""Exit status for a config problem (argparse uses 2 for usage errors too)."""
EXIT_UNAVAILABLE = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``gateway`` verb to the ``toolbus`` command."""
    parser = subparsers.add_parser(
        "gateway",
        help="serve MCP (Streamable HTTP) and forward tool calls to workers over NATS",
        description="Serve MCP over Streamable HTTP; each tools/call becomes a NATS request.",
    )
    add_common_options(parser)
    parser.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (default from config: 3001)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the gateway until interrupted; returns the process exit status."""
    from gateway.app import serve  # the mcp SDK loads only when the gateway runs

    gateway: dict[str, Any] = {}
    if args.host is not None:
        gateway["host"] = args.host
    if args.port is not None:
        gateway["port"] = args.port
    settings = settings_from_args(args, gateway=gateway)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log_format)
    try:
        received = lifecycle.run(serve(settings))
    except BusUnavailable as exc:
        print(f"toolbus gateway: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return lifecycle.EXIT_INTERRUPTED if signal.SIGINT in received else 0
