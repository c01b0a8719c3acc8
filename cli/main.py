"""The ``toolbus`` command: a thin dispatcher over the verbs of the modules in ``VERB_MODULES``.

Run as the console script or as ``python -m cli.main`` (how ``toolbus up`` starts its children).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

VERB_MODULES: Final = (
    "audit",
    "gateway",
    "keys",
    "tools",
    "nats_config",
    "projects",
    "registry",
    "releases",
    "stdio",
    "tasks",
    "up",
    "views",
    "worker",
)
"""The modules of ``cli`` whose ``register`` adds verbs, in this order in ``--help``. A plain list:
the CLI sits above the roles and may import them, so no plug-in discovery is needed."""

VERBS: Final = {
    "audit": "audit",
    "gateway": "gateway",
    "keys": "keys",
    "tools": "tools",
    "call": "tools",
    "nats-config": "nats_config",
    "init": "projects",
    "build": "projects",
    "run": "projects",
    "registry": "registry",
    "publish": "releases",
    "rollback": "releases",
    "retire": "releases",
    "deprecate": "releases",
    "versions": "releases",
    "stdio": "stdio",
    "tasks": "tasks",
    "up": "up",
    "views": "views",
    "worker": "worker",
}
"""Each verb → the module of ``VERB_MODULES`` that registers it (a test holds the two together).

A command imports only its verb's module: a worker restart must not pay for the imports of
every other verb (``toolbus audit``'s reader of the audit stream, ``nats-config``'s permission
tables, ``up``'s supervisor, ...). ``toolbus --help`` and anything this table cannot place get
the whole parser."""

_OPTIONS_WITH_A_VALUE: Final = ("--config", "--nats")
"""The top-level options that take a value (``add_common_options``): the token after them is
not the verb."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: with ``argv``, only the verb it names when it names one (see
    ``VERBS``); otherwise every verb (as ``--help`` lists them, and tests use it)."""
    from cli.options import add_common_options

    parser = argparse.ArgumentParser(prog="toolbus", description="Run WebAssembly components as MCP tools on NATS.")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the installed version and exit")
    add_common_options(parser)  # and on every verb: `toolbus --nats URL tools` = `toolbus tools --nats URL`
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verb = None if argv is None else verb_named(argv)
    for name in VERB_MODULES if verb is None else (VERBS[verb],):
        importlib.import_module(f"cli.{name}").register(subparsers)
    return parser


def verb_named(argv: Sequence[str]) -> str | None:
    """The verb of ``VERBS`` that ``argv`` runs, or None when it names none or argparse might read
    it otherwise (``--``): then the whole parser decides, and words any error."""
    expects_value = False
    for token in argv:
        if expects_value:
            expects_value = False
        elif token == "--":
            return None
        elif token.startswith("-"):
            # argparse takes an unambiguous prefix of a long option (`--conf FILE`) too.
            expects_value = "=" not in token and any(
                option.startswith(token) for option in _OPTIONS_WITH_A_VALUE if len(token) > 2
            )
        else:
            return token if token in VERBS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    # Starting, a process imports and builds what it keeps for its life (modules, classes,
    # pydantic's validators: ~100k objects); cyclic collections meanwhile free nothing and cost a
    # worker ~30 ms of CPU of a ~300 ms start (issue 17). So collection is paused until the verb
    # runs or, for a verb that sets `resumes_gc`, until it has started (the worker: workers.runner).
    # Why this module imports nothing of ours at its top: all of it loads after this line.
    gc.disable()
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser(arguments).parse_args(arguments)  # exits here on --help or a usage error
    if not getattr(args, "resumes_gc", False):
        gc.enable()
    from cli import lifecycle
    from schemas.environment import supervisor_pid_from_env

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
