"""Release verbs for operators: ``toolbus publish``, ``rollback``, ``retire``, ``deprecate``, ``versions``.

Each is a thin client of the registry's release requests (``registry.releases``); anything
else that speaks NATS can do the same: put the Wasm bytes in the artifact store under their
digest, then send a ``PublishRequest`` — or, for an ``oci://`` artifact, name it in the request
and let the registry pull and verify it (``publish --sign KEY`` first signs it, cosign's way:
docs/signatures.md). These verbs find NATS like every other one
(``--nats URL``, or the deployment's ``toolbus.toml`` given with ``--config``); ``publish
--tool-config`` names the *tool's* settings, as the component's entry in a toolbus.toml would
have them (description, per-tool overrides, limits, capabilities, kind…).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import tomllib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus import registry_requests
from bus.connection import connected
from bus.registry_requests import RegistryRefused
from bus.subjects import Subjects
from cli.options import add_common_options, add_json_option, run_verb, wants_json
from cli.projects import build_project, read_project
from registry.errors import RegistryError
from schemas.codec import encode
from schemas.config import ComponentSettings, Settings, describe_validation_error
from schemas.errors import ConfigError
from schemas.wire import PublishRequest, ReleaseReply, ReleaseRequest
from stores import LATEST, PackageStore
from workers.errors import WorkersError

TOOL_CONFIG_EXCLUDED = frozenset({"name", "path", "source", "world"})
"""Fields of a component entry that make no sense for a published artifact."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the release verbs."""
    publish = _parser(subparsers, "publish", "publish a Wasm component (a file or oci://…) as a new version")
    publish.add_argument(
        "artifact", help="a project directory (built first), a .wasm file (or .wat), or oci://HOST/REPO:TAG"
    )
    publish.add_argument(
        "--name", help="package name; its tools are named NAME_<export> (default for a project: its directory's name)"
    )
    publish.add_argument("--version", required=True, help="semantic version, e.g. 1.2.0")
    publish.add_argument(
        "--tool-config", type=Path, metavar="FILE", help="tool.toml: the component's settings (description, limits…)"
    )
    publish.add_argument(
        "--alias", action="append", default=[], help="also point this alias at the version (repeatable)"
    )
    publish.add_argument("--no-latest", action="store_true", help="do not point `latest` at the new version")
    publish.add_argument(
        "--sign",
        type=Path,
        metavar="KEY",
        help="sign the oci:// artifact with this private key first (cosign's format, pushed beside it)",
    )
    publish.set_defaults(run=lambda args: _run(args, _publish))

    rollback = _parser(subparsers, "rollback", "point `latest` (or --alias) back at an earlier version")
    rollback.add_argument("name")
    rollback.add_argument("version", help="a version, or another alias")
    rollback.add_argument("--alias", default=LATEST, help="the alias to re-point (default: latest)")
    rollback.set_defaults(run=lambda args: _run(args, _release("rollback")))

    retire = _parser(subparsers, "retire", "withdraw a version, or (without one) the whole package")
    retire.add_argument("name")
    retire.add_argument("version", nargs="?", default="")
    retire.set_defaults(run=lambda args: _run(args, _release("retire")))

    deprecate = _parser(subparsers, "deprecate", "mark a version deprecated (shown in its tools' descriptions)")
    deprecate.add_argument("name")
    deprecate.add_argument("version")
    deprecate.add_argument("--reason", required=True, help="why, and what to use instead")
    deprecate.set_defaults(run=lambda args: _run(args, _release("deprecate")))

    versions = _parser(subparsers, "versions", "list a package's versions and aliases")
    versions.add_argument("name")
    add_json_option(versions)
    versions.set_defaults(run=lambda args: _run(args, _release("versions")))


def _parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], verb: str, help_text: str
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(verb, help=help_text)
    add_common_options(parser)
    return parser


Release = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, ReleaseReply]]


def _run(args: argparse.Namespace, release: Release) -> int:
    async def verb(settings: Settings, args: argparse.Namespace) -> int:
        try:
            reply = await release(settings, args)
        # WorkersError: a project did not build.
        except (RegistryRefused, RegistryError, ConfigError, WorkersError) as exc:
            print(f"toolbus: {exc}", file=sys.stderr)
            return 1
        if wants_json(args):
            print(encode(reply).decode())
            return 0
        if reply.message:
            print(reply.message)
        print_versions(reply)
        return 0

    return run_verb(args, verb)


def tool_settings(path: Path | None) -> dict[str, Any]:
    """The component settings in a tool.toml, checked as a component entry would be.

    Raises:
        ConfigError: the file is unreadable or breaks a rule (the message names the field).
    """
    if path is None:
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for field in sorted(TOOL_CONFIG_EXCLUDED & raw.keys()):
        raise ConfigError(f"{path}: {field}: not allowed here (the artifact and --name say it)")
    try:
        ComponentSettings.model_validate({**raw, "name": "check", "path": path})
    except ValueError as exc:  # a settings rule broken (pydantic's ValidationError, worded per field)
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc
    return raw


def _artifact_to_publish(settings: Settings, args: argparse.Namespace) -> tuple[bytes, str, dict[str, Any]]:
    """The Wasm bytes, their source label and the tool's settings; a project is built first (and
    ``args.name`` defaults to its directory's name).

    Raises:
        ConfigError: no name for a file, an unreadable artifact or tool config.
        BuildError: the project did not build.
    """
    if Path(args.artifact).is_dir():  # a project: build it, publish with its tool.toml
        project = read_project(Path(args.artifact), args.name)
        args.name = project.settings.name
        built = build_project(project, settings)
        config = tool_settings(args.tool_config) if args.tool_config else _published_settings(project.tool_config)
        return built.read_bytes(), f"{Path(args.artifact).resolve().name} (built {built.name})", config
    if not args.name:
        raise ConfigError("--name: required when publishing a file")
    data, source = read_artifact(args.artifact)
    return data, source, tool_settings(args.tool_config)


def _published_settings(tool_config: dict[str, Any]) -> dict[str, Any]:
    """A project's tool.toml as publish sends it: without what the artifact and --name say."""
    return {key: value for key, value in tool_config.items() if key not in TOOL_CONFIG_EXCLUDED}


def read_artifact(reference: str) -> tuple[bytes, str]:
    """The Wasm bytes of a file (``.wat`` is assembled) and its source label (``oci://`` is the registry's to pull)."""
    path = Path(reference)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    if path.suffix == ".wat":
        import wasmtime  # here, not at the top: building the CLI's parser must not load wasmtime

        # The artifact is always binary: its digest is then the same as the built file's.
        try:
            data = bytes(wasmtime.wat2wasm(data.decode("utf-8", errors="replace")))
        except wasmtime.WasmtimeError as exc:
            raise ConfigError(f"{path}: not valid WAT: {exc}") from exc
    return data, path.name


async def _publish(settings: Settings, args: argparse.Namespace) -> ReleaseReply:
    subjects = Subjects(settings.nats.prefix)
    aliases = ([] if args.no_latest else [LATEST]) + list(args.alias)
    from registry.oci import OCI_SCHEME  # with the OCI client: only a publish needs it (every verb builds the parser)

    if args.artifact.startswith(OCI_SCHEME):
        # The registry pulls it and checks its signature itself (docs/signatures.md): one judge.
        if not args.name:
            raise ConfigError("--name: required when publishing a file or an OCI reference")
        oci = await asyncio.to_thread(_signed, args.artifact, args.sign) if args.sign else args.artifact
        request = PublishRequest(
            name=args.name,
            version=args.version,
            oci=oci,
            source=args.artifact,
            settings=tool_settings(args.tool_config),
            aliases=aliases,
        )
        async with connected(settings.nats, name="toolbus-publish") as nc:
            return await registry_requests.release(nc, subjects.registry_release("publish"), encode(request))
    if args.sign:
        raise ConfigError("--sign: signs an oci:// artifact (cosign's format); push the component to a registry first")
    data, source, config = await asyncio.to_thread(_artifact_to_publish, settings, args)
    async with connected(settings.nats, name="toolbus-publish") as nc:
        store = await PackageStore.open(nc, subjects, replicas=settings.nats.replicas)
        digest = await store.put_artifact(data)
        request = PublishRequest(
            name=args.name, version=args.version, digest=digest, settings=config, source=source, aliases=aliases
        )
        return await registry_requests.release(nc, subjects.registry_release("publish"), encode(request))


def _signed(reference: str, key_path: Path) -> str:
    """Sign ``reference``'s manifest with the key at ``key_path``, push the signature, and return
    the reference pinned to the digest that was signed (so the registry pulls exactly that).

    Raises:
        OciError, SignatureError: the pull, the key or the push failed.
    """
    from registry.oci import OciReference, parse_reference, pull_component
    from registry.signatures import load_private_key, push_signature

    key = load_private_key(key_path)
    ref = parse_reference(reference)
    pulled = pull_component(ref)
    with tempfile.TemporaryDirectory(prefix="toolbus-sign-") as scratch:
        push_signature(
            ref.registry, ref.repository, pulled.manifest_digest, key, insecure=ref.is_loopback, scratch=Path(scratch)
        )
    return str(OciReference(host=ref.host, port=ref.port, repository=ref.repository, digest=pulled.manifest_digest))


def _release(verb: str) -> Release:
    async def act(settings: Settings, args: argparse.Namespace) -> ReleaseReply:
        subjects = Subjects(settings.nats.prefix)
        request = ReleaseRequest(
            name=args.name,
            version=getattr(args, "version", "") or "",
            alias=getattr(args, "alias", LATEST),
            reason=getattr(args, "reason", "") or "",
        )
        async with connected(settings.nats, name=f"toolbus-{verb}") as nc:
            return await registry_requests.release(nc, subjects.registry_release(verb), encode(request))

    return act


def print_versions(reply: ReleaseReply) -> None:
    print(f"{'VERSION':<12}  {'DIGEST':<19}  {'ALIASES':<16}  {'PUBLISHED':<20}  {'SIGNER':<32}  STATUS")
    for version in reply.versions:
        digest = version.digest.removeprefix("sha256:")[:12]
        published = datetime.fromtimestamp(version.published_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        status = "retired" if version.retired else (f"deprecated: {version.deprecated}" if version.deprecated else "")
        aliases = ",".join(version.aliases) or "-"
        signer = f"{version.signer} ({version.signer_key})" if version.signer else "-"
        print(f"{version.version:<12}  sha256:{digest:<12}  {aliases:<16}  {published:<20}  {signer:<32}  {status}")
