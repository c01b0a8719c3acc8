"""``toolbus init``, ``build`` and ``run``: a tool project from a template, built, and tried locally.

A project is a directory. Its language follows from its files: ``app.py`` (Python, componentize-py)
or ``app.js`` (JavaScript, componentize-js) beside a ``wit/`` world make a component, one tool per
export; a ``tool.toml`` saying ``kind = "command"`` beside ``*.c`` files makes a WASI command
built with clang (C), one tool. ``tool.toml`` holds what a ``[[components]]`` entry would say
(description, limits, capabilities, and a command's schemas); ``toolbus publish DIR`` sends it
along. Toolchains install themselves on first use (``workers.toolchains.installers``). Rust is not
offered: no toolchain that targets WASI P2 can be had from PyPI, npm or Debian's packages.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from cli.logs import configure_logging
from cli.options import add_common_options, json_arguments, settings_from_args
from schemas.config import ComponentSettings, Settings, describe_validation_error
from schemas.errors import ConfigError

LANGUAGES: Final = ("python", "javascript", "c")
PROJECT_NAME: Final = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")  # fullmatch: "$" lets a final newline pass
"""A WIT identifier (the world is named after the project) and a component name: kebab-case."""
TOOL_TOML: Final = "tool.toml"
WORLD: Final = re.compile(r"^\s*world\s+([a-z][a-z0-9-]*)\s*\{", re.MULTILINE)
RUN_TIMEOUT_S: Final = 30.0
"""``toolbus run``'s deadline for the call (a tool's own limit may be lower)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``init``, ``build`` and ``run`` verbs."""
    init = subparsers.add_parser("init", help="start a tool project from a template (python, javascript, c)")
    init.add_argument("name", help="the project's name, kebab-case (its tools are named NAME_<export>)")
    init.add_argument("--lang", choices=LANGUAGES, default="python", help="the language (default: python)")
    init.add_argument("--dir", type=Path, help="where to create it (default: ./NAME)")
    init.set_defaults(run=run_init)

    build = subparsers.add_parser("build", help="build a tool project; prints the built .wasm")
    add_common_options(build)
    build.add_argument("project", type=Path, help="the project directory")
    build.set_defaults(run=run_build)

    run = subparsers.add_parser("run", help="build a tool project and call one of its tools here, without NATS")
    add_common_options(run)
    run.add_argument("project", type=Path, help="the project directory")
    run.add_argument("tool", help="the tool's name, e.g. NAME_hello")
    run.add_argument("arguments", nargs="?", default="{}", help="JSON object of arguments")
    run.set_defaults(run=run_run)


def run_init(args: argparse.Namespace) -> int:
    """Write the template of ``args.lang`` as project ``args.name``."""
    name: str = args.name
    if not PROJECT_NAME.fullmatch(name):
        print(f"toolbus: {name!r}: a project name is kebab-case, e.g. my-tool", file=sys.stderr)
        return 2
    target: Path = args.dir or Path(name)
    if target.exists() and any(target.iterdir()):
        print(f"toolbus: {target} exists and is not empty", file=sys.stderr)
        return 1
    template = files("cli") / "templates" / args.lang
    written = _copy_template(template, target, {"name": name, "tool": f"{name}_hello"})
    for path in written:
        print(f"created {path}")
    print(f'next: toolbus run {target} {_first_tool(name, args.lang)} \'{{"name": "Ada"}}\'')
    return 0


def _first_tool(name: str, language: str) -> str:
    return name if language == "c" else f"{name}_hello"  # a command module is one tool, named as it


def _copy_template(template: Any, target: Path, values: dict[str, str]) -> list[Path]:
    """Copy ``template`` (an importlib resource directory) to ``target``, filling ``{{name}}`` and
    ``{{tool}}`` in every file (plain markers: ``$`` means something in JavaScript and shell); the
    ``.tmpl`` suffixes that keep templates out of this repo's linters are dropped."""
    written = []
    for entry in sorted(template.iterdir(), key=lambda e: e.name):
        destination = target / entry.name.removesuffix(".tmpl")
        if entry.is_dir():
            written += _copy_template(entry, destination, values)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        text = entry.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(f"{{{{{key}}}}}", value)
        destination.write_text(text, encoding="utf-8")
        if destination.suffix == ".sh":
            destination.chmod(0o755)
        written.append(destination)
    return written


@dataclass(frozen=True)
class Project:
    """A project directory as a component entry: its settings, and the tool config it publishes."""

    settings: ComponentSettings
    tool_config: dict[str, Any]
    """``tool.toml`` as read (what ``publish`` sends along), ``{}`` without one."""


def read_project(directory: Path, name: str | None = None) -> Project:
    """The component entry a project directory stands for (named ``name``, default: the directory's).

    Raises:
        ConfigError: not a project, or its ``tool.toml`` breaks a rule (the message says which).
    """
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory")
    tool_toml = directory / TOOL_TOML
    try:
        tool_config = tomllib.loads(tool_toml.read_text(encoding="utf-8")) if tool_toml.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{tool_toml}: {exc}") from exc
    entry: dict[str, Any] = {**tool_config, "name": name or directory.resolve().name, "source": directory}
    if tool_config.get("kind", "component") == "component":
        entry["world"] = _world_of(directory)
    try:
        return Project(ComponentSettings.model_validate(entry), tool_config)
    except ValueError as exc:  # a settings rule broken (pydantic's ValidationError, worded per field)
        raise ConfigError(f"{directory}: {describe_validation_error(exc)}") from exc


def _world_of(directory: Path) -> str:
    """The one world the project's own WIT (not ``wit/deps``) declares."""
    worlds = {m.group(1) for wit in sorted((directory / "wit").glob("*.wit")) for m in WORLD.finditer(wit.read_text())}
    if len(worlds) != 1:
        found = ", ".join(sorted(worlds)) or "none"
        raise ConfigError(f"{directory}/wit: expected one world in the project's .wit files, found {found}")
    return worlds.pop()


def build_project(project: Project, settings: Settings) -> Path:
    """Build (or find in the cache) the project's ``.wasm``.

    Raises:
        BuildError: the toolchain failed; its own message says why.
    """
    from workers.sources import KINDS  # the toolchains load only when a verb builds

    return KINDS[project.settings.kind].resolve(project.settings, settings.cache_dir)


def run_build(args: argparse.Namespace) -> int:
    """Print the path of the built ``.wasm``."""
    from workers.toolchains import BuildError

    settings = settings_from_args(args)
    if settings is None:
        return 2
    configure_logging(settings.log_format)
    try:
        print(build_project(read_project(args.project), settings))
    except (ConfigError, BuildError) as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return 1
    return 0


def run_run(args: argparse.Namespace) -> int:
    """Build, load in a local sandbox, call one tool; print its CallToolResult JSON (exit 1 on isError)."""
    from schemas.codec import encode
    from workers.errors import WorkersError
    from workers.sandbox import EngineHost
    from workers.sources import load_one

    settings = settings_from_args(args)
    if settings is None:
        return 2
    configure_logging(settings.log_format)
    arguments = json_arguments(args.arguments)
    if arguments is None:
        return 2
    try:
        project = read_project(args.project)
        loaded = load_one(project.settings, EngineHost(), settings.cache_dir, defaults=settings.worker.limits)
        tools = sorted(tool.name for tool in loaded.tools)
        if args.tool not in tools:
            print(f"toolbus: {args.tool!r} is not a tool of {args.project}; it has {', '.join(tools)}", file=sys.stderr)
            return 2
        result = loaded.call(args.tool, arguments, RUN_TIMEOUT_S)
    except (ConfigError, WorkersError) as exc:
        print(f"toolbus: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(encode(result))))
    return 1 if result.is_error else 0
