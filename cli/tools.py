"""``toolbus tools`` and ``toolbus call``: what the catalogue holds, and calling one tool over NATS."""

from __future__ import annotations

import argparse
import sys

import msgspec

from bus.call_request import CallRequests
from bus.connection import connected, send_request
from bus.errors import BusTimeout, NoResponders, PayloadTooLarge
from bus.payloads import Payloads
from bus.registry_requests import RegistryRefused, tool_pages
from bus.subjects import Header, Subjects, is_valid_tool_name
from cli.options import add_common_options, add_json_option, json_arguments, run_verb, wants_json
from schemas.codec import decode, encode
from schemas.config import DEFAULT_CALL_TIMEOUT_S, Settings
from schemas.wire import CallToolResult, ErrorReply

REQUEST_TIMEOUT_S = 5.0
"""Registry requests are in-memory lookups; seconds means the registry is not running."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tools`` and ``call`` verbs."""
    tools = subparsers.add_parser("tools", help="list the tools in the catalogue")
    add_common_options(tools)
    add_json_option(tools)
    tools.set_defaults(run=lambda args: run_verb(args, list_tools))

    call = subparsers.add_parser("call", help="call a tool over NATS and print its CallToolResult JSON")
    add_common_options(call)
    call.add_argument("tool", help="tool name, e.g. calc_add")
    call.add_argument("arguments", nargs="?", default="{}", help="JSON object of arguments")
    call.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CALL_TIMEOUT_S,
        help=f"seconds to wait (default {DEFAULT_CALL_TIMEOUT_S:g}: a tool's default limit plus room for its answer)",
    )
    call.set_defaults(run=lambda args: run_verb(args, call_tool))


async def list_tools(settings: Settings, args: argparse.Namespace) -> int:
    """Print name, version, digest, live workers and description of every tool in the catalogue."""
    subjects = Subjects(settings.nats.prefix)
    async with connected(settings.nats, name="toolbus-cli") as nc:
        tools, live = [], {}
        try:
            async for page in tool_pages(nc, subjects, timeout_s=REQUEST_TIMEOUT_S):
                tools.extend(page.tools)
                live.update(page.live_workers)
        except RegistryRefused as exc:
            print(f"toolbus: {exc}", file=sys.stderr)
            return 1
    if wants_json(args):
        listing = [{**msgspec.to_builtins(tool), "liveWorkers": live.get(tool.name, 0)} for tool in tools]
        print(encode(listing).decode())
        return 0
    width = max((len(t.name) for t in tools), default=4)
    print(f"{'NAME':<{width}}  {'VERSION':<8}  {'DIGEST':<19}  {'WORKERS':>7}  DESCRIPTION")
    for tool in tools:
        digest = tool.digest.removeprefix("sha256:")[:12]
        workers = live.get(tool.name, 0)
        print(f"{tool.name:<{width}}  {tool.version or '-':<8}  sha256:{digest:<12}  {workers:>7}  {tool.description}")
    return 0


async def call_tool(settings: Settings, args: argparse.Namespace) -> int:
    """Send one call and print the reply; exit 1 for errors and isError results."""
    if not is_valid_tool_name(args.tool):
        print(f"toolbus: {args.tool!r} is not a valid tool name", file=sys.stderr)
        return 2
    if json_arguments(args.arguments) is None:
        return 2
    # No era and no principal: an operator's call is a plain NATS caller's, as `nats req` would send.
    request = CallRequests(Subjects(settings.nats.prefix)).build(
        args.tool, args.arguments.encode(), timeout_s=args.timeout
    )
    async with connected(settings.nats, name="toolbus-cli") as nc:
        payloads = Payloads(nc, Subjects(settings.nats.prefix), max_bytes=settings.nats.max_payload_bytes)
        try:
            # Arguments or a result larger than one message travel as claim checks (bus.payloads).
            body, headers = await payloads.offload(request.body, request.headers)
            reply = await send_request(nc, request.subject, body, timeout_s=args.timeout, headers=headers)
            reply.data = await payloads.take(reply.headers, reply.data)
        except PayloadTooLarge as exc:
            print(f"toolbus: {exc}", file=sys.stderr)
            return 1
        except NoResponders:
            print(f"toolbus: nothing is serving {args.tool!r} (unknown tool, or no worker)", file=sys.stderr)
            return 1
        except BusTimeout:
            print(f"toolbus: no reply within {args.timeout}s", file=sys.stderr)
            return 1
    print(reply.data.decode())
    if reply.headers and Header.ERROR in reply.headers:
        error = decode(reply.data, ErrorReply).error
        print(f"toolbus: error {error.code}: {error.message}", file=sys.stderr)
        return 1
    return 1 if decode(reply.data, CallToolResult).is_error else 0
