"""``toolbus nats-config``: a nats-server config with one least-privilege user per role (docs/security.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bus.permissions import markdown_table
from bus.security import Cluster, EnvReference, env_passwords, new_passwords, server_config
from bus.subjects import Subjects


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``nats-config`` verb."""
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
