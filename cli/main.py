"""The ``toolbus`` command: a thin dispatcher over the verbs of the modules in ``VERB_MODULES``.

Run as the console script or as ``python -m cli.main`` (how ``toolbus up`` starts its children).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from cli import (
    audit,
    gateway,
    keys,
    lifecycle,
    nats_config,
    projects,
    registry,
    releases,
    stdio,
    tasks,
    tools,
    up,
    views,
    worker,
)
from cli.options import add_common_options
from schemas.environment import supervisor_pid_from_env

VERB_MODULES = (audit, gateway, keys, tools, nats_config, projects, registry, releases, stdio, tasks, up, views, worker)
"""Each module's ``register`` adds its verbs, in this order in ``--help``. A plain list: the CLI
sits above the roles and may import them, so no plug-in discovery is needed. Registering imports
nothing heavy; a verb loads its role's machinery (the mcp SDK, wasmtime) only when it runs."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every verb (used by ``main`` and by tests)."""
    parser = argparse.ArgumentParser(prog="toolbus", description="Run WebAssembly components as MCP tools on NATS.")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the installed version and exit")
    add_common_options(parser)  # and on every verb: `toolbus --nats URL tools` = `toolbus tools --nats URL`
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in VERB_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if not lifecycle.stop_with_supervisor(supervisor_pid_from_env()):
        return 1  # started by a `toolbus up` that is gone already
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return lifecycle.EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`toolbus tools | head -2`): stop quietly, as `cat` would. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a program the closed pipe stopped."""


class _Version(argparse.Action):
    """``--version``: reads the installed version only when asked (``importlib.metadata`` costs every
    other command its import, and every process ``toolbus up`` starts builds this parser)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> NoReturn:
        print(f"toolbus {_installed_version()}")  # to stdout, as argparse's own version action
        parser.exit()


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toolbus")
    except PackageNotFoundError:  # a source tree that was not installed
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
