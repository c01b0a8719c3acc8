"""The ``toolbus`` command: a thin dispatcher over verbs that each package registers.

Verbs come from the ``toolbus.commands`` entry-point group (see pyproject.toml), so this
module never imports gateway, workers or registry; each verb's module does its own work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from bus.lifecycle import stop_with_supervisor
from schemas.environment import supervisor_pid_from_env

COMMAND_GROUP = "toolbus.commands"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered verb (used by ``main`` and by tests)."""
    parser = argparse.ArgumentParser(prog="toolbus", description="Run WebAssembly components as MCP tools on NATS.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = entry.load()
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if not stop_with_supervisor(supervisor_pid_from_env()):
        return 1  # started by a `toolbus up` that is gone already
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
