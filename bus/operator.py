"""Operator verbs that only need the bus: ``toolbus tools``, ``toolbus call``, ``toolbus nats-config``."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import nats.errors

from bus.connection import connected
from bus.options import add_common_options, run_verb
from bus.permissions import markdown_table
from bus.security import Cluster, EnvReference, env_passwords, new_passwords, server_config
from bus.subjects import Header, Subjects, is_valid_tool_name
from schemas.codec import DecodeError, decode, decode_json, encode
from schemas.config import Settings
from schemas.wire import CallToolResult, ErrorReply, ToolList, ToolListRequest

REQUEST_TIMEOUT_S = 5.0
"""Registry requests are in-memory lookups; seconds means the registry is not running."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tools`` and ``call`` verbs."""
    tools = subparsers.add_parser("tools", help="list the tools in the catalogue")
    add_common_options(tools)
    tools.set_defaults(run=lambda args: run_verb(args, list_tools))

    call = subparsers.add_parser("call", help="call a tool over NATS and print its CallToolResult JSON")
    add_common_options(call)
    call.add_argument("tool", help="tool name, e.g. calc_add")
    call.add_argument("arguments", nargs="?", default="{}", help="JSON object of arguments")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    call.set_defaults(run=lambda args: run_verb(args, call_tool))

    secure = subparsers.add_parser(
        "nats-config", help="print a nats-server config with one least-privilege user per role (docs/security.md)"
    )
    secure.add_argument("--prefix", default="toolbus", help="the deployment's subject prefix (default toolbus)")
    secure.add_argument("--host", default="127.0.0.1")
    secure.add_argument("--port", type=int, default=4222)
    secure.add_argument("--store-dir", type=Path, default=Path("jetstream"), help="JetStream storage directory")
    secure.add_argument("--http-port", type=int, help="monitoring port, for /healthz (default: off)")
    secure.add_argument("--cluster-name", help="make the server a node of this cluster (with --route)")
    secure.add_argument("--cluster-port", type=int, default=6222, help="port for routes from peers (default 6222)")
    secure.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="URL",
        help="a cluster peer, nats://host:6222; repeat for each (a node ignores its own)",
    )
    secure.add_argument(
        "--passwords-from-env",
        action="store_true",
        help="read each role's password from $ROLE_NATS_PASSWORD in nats-server's environment "
        "instead of writing fresh ones into the config",
    )
    secure.add_argument(
        "--table", action="store_true", help="print the role by subject/stream table (docs/security.md) instead"
    )
    secure.set_defaults(run=print_nats_config)


async def list_tools(settings: Settings, args: argparse.Namespace) -> int:
    """Print name, version, digest, live workers and description of every tool in the catalogue."""
    subjects = Subjects(settings.nats.prefix)
    async with connected(settings.nats, name="toolbus-cli") as nc:
        tools, live, cursor = [], {}, None
        while True:
            try:
                reply = await nc.request(
                    subjects.registry_list, encode(ToolListRequest(cursor=cursor)), timeout=REQUEST_TIMEOUT_S
                )
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                print("toolbus: no registry is answering on", subjects.registry_list, file=sys.stderr)
                return 1
            page = decode(reply.data, ToolList)
            tools.extend(page.tools)
            live.update(page.live_workers)
            if not page.next_cursor:
                break
            cursor = page.next_cursor
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
    try:
        decode_json(args.arguments.encode())
    except DecodeError as exc:
        print(f"toolbus: arguments are not valid JSON: {exc}", file=sys.stderr)
        return 2
    subjects = Subjects(settings.nats.prefix)
    headers = {
        Header.REQUEST_ID: uuid.uuid4().hex,
        Header.DEADLINE_MS: str(int((time.time() + args.timeout) * 1000)),
    }
    async with connected(settings.nats, name="toolbus-cli") as nc:
        try:
            reply = await nc.request(
                subjects.call(args.tool), args.arguments.encode(), timeout=args.timeout, headers=headers
            )
        except nats.errors.NoRespondersError:
            print(f"toolbus: nothing is serving {args.tool!r} (no registry, no worker)", file=sys.stderr)
            return 1
        except nats.errors.TimeoutError:
            print(f"toolbus: no reply within {args.timeout}s", file=sys.stderr)
            return 1
    print(reply.data.decode())
    if reply.headers and Header.ERROR in reply.headers:
        error = decode(reply.data, ErrorReply).error
        print(f"toolbus: error {error.code}: {error.message}", file=sys.stderr)
        return 1
    return 1 if decode(reply.data, CallToolResult).is_error else 0


def print_nats_config(args: argparse.Namespace) -> int:
    """Print the server config on stdout, and how each role gets its credentials on stderr
    (with ``--table``: what each role may do, as Markdown)."""
    if args.table:
        print(markdown_table(Subjects(args.prefix)))
        return 0
    if bool(args.cluster_name) != bool(args.route):
        print("toolbus: a cluster needs both --cluster-name and at least one --route", file=sys.stderr)
        return 2
    cluster = Cluster(args.cluster_name, tuple(args.route), args.cluster_port) if args.cluster_name else None
    passwords: dict[str, str] | dict[str, EnvReference] = (
        env_passwords() if args.passwords_from_env else new_passwords()
    )
    config = server_config(
        Subjects(args.prefix),
        passwords,
        store_dir=args.store_dir,
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        cluster=cluster,
    )
    print(config)
    for role, password in passwords.items():
        secret = f"${password.name} (set it for nats-server too)" if isinstance(password, EnvReference) else password
        print(f'# {role}: [nats] user = "{role}", and TOOLBUS_NATS_PASSWORD={secret}', file=sys.stderr)
    return 0
