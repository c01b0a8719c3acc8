"""Command-line options shared by every verb: where the config is and where NATS is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from schemas.config import Settings, load_settings
from schemas.errors import ConfigError


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--nats URL`` (the URL wins over the file)."""
    parser.add_argument("--config", type=Path, help="toolbus.toml to load (default: built-in defaults)")
    parser.add_argument("--nats", metavar="URL", help="NATS server URL(s), comma-separated")


def settings_from_args(args: argparse.Namespace, **overrides: dict[str, Any]) -> Settings | None:
    """Load settings named by the common options; print the problem and return None on error."""
    if args.nats:
        overrides.setdefault("nats", {})["url"] = args.nats
    try:
        return load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return None
