"""Command-line options shared by every verb: where the config is and where NATS is."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from bus.credentials import with_local_credentials
from bus.errors import BusUnavailable, CredentialsError
from cli import lifecycle
from cli.logs import configure_logging
from schemas.config import Settings, load_settings
from schemas.errors import ConfigError

SERVER_ROLES: Final = ("gateway", "worker", "registry")
"""Verbs that run a role of their own name; every other verb is the ``operator``."""

Verb = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
"""An operator verb: given the settings and its arguments, do the work and return the exit code."""


def add_common_options(parser: argparse.ArgumentParser, *, config_option: str = "--config") -> None:
    """``--config FILE`` and ``--nats URL`` (the URL wins over the file).

    ``config_option`` renames ``--config`` for verbs where that name means something else
    (``toolbus publish --config tool.toml`` names the tool's settings).
    """
    parser.add_argument(
        config_option,
        dest="settings_file",
        metavar="FILE",
        type=Path,
        help="toolbus.toml to load (default: built-in defaults)",
    )
    parser.add_argument("--nats", metavar="URL", help="NATS server URL(s), comma-separated")


def role_of_verb(verb: str | None) -> str:
    """The NATS role a ``toolbus`` verb connects as."""
    return verb if verb in SERVER_ROLES else "operator"


def settings_from_args(args: argparse.Namespace, **overrides: dict[str, Any]) -> Settings | None:
    """Load settings named by the common options (with this machine's credentials for the verb's
    role, ``role_of_verb`` and ``bus.credentials``); print the problem and return None on error."""
    if args.nats:
        overrides.setdefault("nats", {})["url"] = args.nats
    try:
        settings = load_settings(args.settings_file, **overrides)
    except ConfigError as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return None
    # On a machine where `toolbus up` made credentials, every verb finds its role's.
    try:
        return with_local_credentials(settings, role_of_verb(getattr(args, "command", None)))
    except CredentialsError as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return None


def run_verb(args: argparse.Namespace, verb: Verb, **overrides: dict[str, Any]) -> int:
    """Load the settings the common options name, configure logging, run ``verb`` to its exit code.

    ``overrides`` replace settings sections field by field. A config problem exits 2; an
    unreachable NATS exits 1, with the reason on stderr.
    """
    settings = settings_from_args(args, **overrides)
    if settings is None:
        return 2
    configure_logging(settings.log_format)  # logs go to stderr; stdout carries only the answer
    try:
        return lifecycle.run(verb(settings, args))
    except (BusUnavailable, CredentialsError) as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return 1
