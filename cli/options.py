"""Command-line options shared by every verb: where the config is and where NATS is.

Every verb's module imports this one to register its options, so its top imports only argparse:
the settings (pydantic), the bus (nats-py) and the stores load when a verb runs, and
``toolbus VERB --help`` or a usage error costs none of them (fast restarts, issue 17).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from schemas.config import Settings

SERVER_ROLES: Final = ("gateway", "worker", "registry")
"""Verbs that run a role of their own name; every other verb is the ``operator``."""

UNREACHABLE_HINT: Final = (
    "hint: is `toolbus up` (or a NATS server) running? Name another with --nats URL or $TOOLBUS_NATS_URL."
)

Verb = Callable[["Settings", argparse.Namespace], Coroutine[Any, Any, int]]
"""An operator verb: given the settings and its arguments, do the work and return the exit code."""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (the deployment's toolbus.toml) and ``--nats URL`` (wins over the file and
    ``$TOOLBUS_NATS_URL``), on the top-level parser and on every verb's, so they go anywhere.

    Their default is ``SUPPRESS``: a verb's parser, run after the top-level one, must not
    overwrite a value given before the verb with its own default (``common_option``).
    """
    parser.add_argument(
        "--config",
        dest="settings_file",
        metavar="FILE",
        type=Path,
        default=argparse.SUPPRESS,
        help="toolbus.toml to load (default: built-in defaults)",
    )
    parser.add_argument("--nats", metavar="URL", default=argparse.SUPPRESS, help="NATS server URL(s), comma-separated")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``, for every verb that lists something: the listing as JSON on stdout, for scripts."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of a table")


def wants_json(args: argparse.Namespace) -> bool:
    """Whether ``--json`` was given (before or after a sub-verb)."""
    return bool(common_option(args, "json"))


def common_option(args: argparse.Namespace, name: str) -> Any:
    """A common option's value, ``None`` when it was given neither before nor after the verb."""
    return getattr(args, name, None)


def json_arguments(text: str) -> dict[str, Any] | None:
    """A tool's arguments given on the command line: a JSON object, or ``None`` after saying why not."""
    from schemas.codec import DecodeError, decode_json

    try:
        arguments = decode_json(text.encode())
    except DecodeError as exc:
        print(f"toolbus: arguments are not valid JSON: {exc}", file=sys.stderr)
        return None
    if not isinstance(arguments, dict):
        print("toolbus: arguments must be a JSON object", file=sys.stderr)
        return None
    return arguments


def role_of_verb(verb: str | None) -> str:
    """The NATS role a ``toolbus`` verb connects as."""
    return verb if verb in SERVER_ROLES else "operator"


def settings_from_args(args: argparse.Namespace, **overrides: dict[str, Any]) -> Settings | None:
    """Load settings named by the common options (with this machine's credentials for the verb's
    role, ``role_of_verb`` and ``bus.credentials``); print the problem and return None on error."""
    settings = _settings_file(args, **overrides)
    return None if settings is None else _with_credentials(settings, args)


def _settings_file(args: argparse.Namespace, **overrides: dict[str, Any]) -> Settings | None:
    """The settings file the common options name, with ``overrides``; None after printing why not.
    Imports only ``schemas`` (not the bus: see ``run_verb``'s ``begin``)."""
    from schemas.config import load_settings
    from schemas.errors import ConfigError

    nats_url = common_option(args, "nats")
    if nats_url:
        overrides.setdefault("nats", {})["url"] = nats_url
    try:
        return load_settings(common_option(args, "settings_file"), **overrides)
    except ConfigError as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return None


def _with_credentials(settings: Settings, args: argparse.Namespace) -> Settings | None:
    """``settings`` with this machine's credentials for the verb's role; None after printing why not."""
    from bus.credentials import with_local_credentials
    from bus.errors import CredentialsError

    # On a machine where `toolbus up` made credentials, every verb finds its role's.
    try:
        return with_local_credentials(settings, role_of_verb(getattr(args, "command", None)))
    except CredentialsError as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return None


def run_verb(
    args: argparse.Namespace,
    verb: Verb,
    *,
    begin: Callable[[Settings], None] | None = None,
    **overrides: dict[str, Any],
) -> int:
    """Load the settings the common options name, configure logging, run ``verb`` to its exit code.

    ``overrides`` replace settings sections field by field. ``begin`` is called with the settings
    (before this machine's credentials are added) once logging is configured and before the bus,
    nats-py and the event loop are imported: work it starts in threads runs beside those imports
    (the worker's component loads, issue 17). A config problem exits 2; an unreachable NATS exits
    1, with the reason on stderr.
    """
    from cli.logs import configure_logging

    settings = _settings_file(args, **overrides)
    if settings is None:
        return 2
    configure_logging(settings.log_format)  # logs go to stderr; stdout carries only the answer
    if begin is not None:
        begin(settings)

    from bus.errors import BusUnavailable, CredentialsError
    from cli import lifecycle
    from stores import StoreError

    settings = _with_credentials(settings, args)
    if settings is None:
        return 2
    try:
        return lifecycle.run(verb(settings, args))
    except BusUnavailable as exc:
        print(f"toolbus: {exc}\n{UNREACHABLE_HINT}", file=sys.stderr)
        return 1
    except (CredentialsError, StoreError) as exc:  # StoreError: a stored record refused (a bad name, ...)
        print(f"toolbus: {exc}", file=sys.stderr)
        return 1
