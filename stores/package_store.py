"""Published packages in JetStream: Wasm artifacts by digest, versions and aliases in KV.

- **Artifacts** live in the Object Store bucket ``PREFIX_artifacts`` under their digest
  (``sha256:<hex>`` of the bytes): immutable and deduplicated; whoever reads one checks the
  hash before using it.
- **Versions** are KV entries ``version.NAME.VERSION`` holding a ``PackageVersion``: written
  once (``create``), afterwards only deprecated or retired.
- **Aliases** are KV entries ``alias.NAME.ALIAS`` holding an ``Alias``; ``latest`` is what
  workers serve, rollback re-points it.

Readers (workers, the CLI) and the writer (the registry) share this one module.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from bus.errors import KeyDeleted, KeyNotFound, NotFound, WrongLastSequence, nats_boundary
from bus.kv import snapshot
from bus.provisioning import ensure_bucket, ensure_object_store
from bus.subjects import Subjects, is_valid_tool_name
from schemas.codec import decode, encode
from schemas.wire import Alias, PackageVersion
from stores.errors import ArtifactError, InvalidName, VersionExists

LATEST = "latest"
_NUMBER = r"(0|[1-9][0-9]*)"
VERSION_PATTERN = re.compile(rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")
"""Semantic versions without build metadata (``+`` cannot appear in a KV key). Matched whole
(``fullmatch``): with ``match`` and ``$``, a version ending in a newline passed and became a KV key."""
ALIAS_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")
"""Matched whole (``fullmatch``), as ``VERSION_PATTERN``."""
NAME_LIMIT = 32
"""Package names are tool-name prefixes; this leaves room for the export in the 64-char tool name."""


def check_name(name: str) -> None:
    """Refuse a package name that cannot be a tool-name prefix.

    Raises:
        InvalidName: it is not 1-``NAME_LIMIT`` letters, digits, '_' or '-'.
    """
    if not is_valid_tool_name(name) or len(name) > NAME_LIMIT:
        raise InvalidName(f"package name {name!r} must be 1-{NAME_LIMIT} letters, digits, '_' or '-'")


def check_version(version: str) -> None:
    """Refuse a version that is not a semantic version (``VERSION_PATTERN``).

    Raises:
        InvalidName: it is not.
    """
    if not VERSION_PATTERN.fullmatch(version):
        raise InvalidName(f"version {version!r} is not a semantic version such as 1.2.0 or 2.0.0-rc.1")


def check_alias(alias: str) -> None:
    """Refuse an alias that cannot be a key token (``ALIAS_PATTERN``).

    Raises:
        InvalidName: it cannot.
    """
    if not ALIAS_PATTERN.fullmatch(alias):
        raise InvalidName(f"alias {alias!r} must be lowercase letters, digits and '-', starting with a letter")


def version_order(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key of a semantic version: a release sorts after its pre-releases."""
    match = VERSION_PATTERN.fullmatch(version)
    if match is None:
        return (-1, -1, -1, -1, ())
    major, minor, patch, pre = match.groups()
    pre_key = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else ()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre_key)


def version_key(name: str, version: str) -> str:
    return f"version.{name}.{version}"


def alias_key(name: str, alias: str) -> str:
    return f"alias.{name}.{alias}"


@dataclass(frozen=True)
class KeyParts:
    kind: str
    """``version`` or ``alias``."""
    name: str
    rest: str
    """The version, or the alias name."""


def parse_key(key: str) -> KeyParts | None:
    kind, _, remainder = key.partition(".")
    name, _, rest = remainder.partition(".")
    if kind not in ("version", "alias") or not name or not rest:
        return None
    return KeyParts(kind, name, rest)


def artifact_digest(data: bytes) -> str:
    """``sha256:<hex>``: the same identity ``workers.sandbox.compile_cache.wasm_digest`` gives."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class PackageStore:
    """The packages bucket and the artifact store of one deployment.

    Besides what each method names, any of them raises a ``bus.errors.BusError`` (such as
    ``ConnectionClosed`` or ``BusTimeout``) when NATS fails one of its reads or writes.
    """

    def __init__(self, kv: KeyValue, artifacts: ObjectStore) -> None:
        self.kv = kv
        self.artifacts = artifacts

    @classmethod
    async def open(cls, nc: NatsClient, subjects: Subjects, *, replicas: int = 1) -> PackageStore:
        """The store of ``subjects``' deployment, its buckets created if missing (with ``replicas``)."""
        kv = await ensure_bucket(nc, subjects.packages_bucket, replicas=replicas)
        artifacts = await ensure_object_store(nc, subjects.artifacts_store, replicas=replicas)
        return cls(kv, artifacts)

    # -- artifacts ------------------------------------------------------------------------------
    async def put_artifact(self, data: bytes) -> str:
        """Store ``data`` under its digest (once: an existing artifact is not uploaded again)."""
        digest = artifact_digest(data)
        try:
            with nats_boundary:
                info = await self.artifacts.get_info(digest)
            if info.size == len(data) and not info.deleted:
                return digest
        except NotFound:
            pass
        with nats_boundary:
            await self.artifacts.put(digest, data)
        return digest

    async def has_artifact(self, digest: str) -> bool:
        try:
            with nats_boundary:
                info = await self.artifacts.get_info(digest)
        except NotFound:
            return False
        return not info.deleted

    async def get_artifact(self, digest: str) -> bytes:
        """The bytes of artifact ``digest``, checked against it.

        Raises:
            ArtifactError: there is no such artifact, or its bytes do not hash to ``digest``.
        """
        try:
            with nats_boundary:
                result = await self.artifacts.get(digest)
        except NotFound:
            raise ArtifactError(f"artifact {digest} is not in the artifact store") from None
        data = bytes(result.data or b"")
        actual = artifact_digest(data)
        if actual != digest:
            raise ArtifactError(f"artifact {digest} is corrupt: its bytes hash to {actual}")
        return data

    # -- versions -------------------------------------------------------------------------------
    async def version(self, name: str, version: str) -> PackageVersion | None:
        try:
            with nats_boundary:
                entry = await self.kv.get(version_key(name, version))
        except (KeyNotFound, KeyDeleted):
            return None
        return decode(entry.value, PackageVersion) if entry.value else None

    async def create_version(self, record: PackageVersion) -> None:
        """Write a new version; fails if that version exists (versions are immutable).

        Raises:
            VersionExists: the version exists already.
        """
        try:
            with nats_boundary:
                await self.kv.create(version_key(record.name, record.version), encode(record))
        except WrongLastSequence:
            raise VersionExists(
                f"{record.name} {record.version} is already published; versions are immutable"
            ) from None

    async def update_version(self, record: PackageVersion) -> None:
        """Rewrite a version's mutable fields (deprecation, retirement)."""
        with nats_boundary:
            await self.kv.put(version_key(record.name, record.version), encode(record))

    async def versions(self, name: str) -> list[PackageVersion]:
        """Every version of ``name``, oldest first."""
        records = [decode(value, PackageVersion) for _, value in await snapshot(self.kv, f"version.{name}.>")]
        return sorted(records, key=lambda r: version_order(r.version))

    # -- aliases --------------------------------------------------------------------------------
    async def alias(self, name: str, alias: str = LATEST) -> str | None:
        """The version ``alias`` points at, or None."""
        try:
            with nats_boundary:
                entry = await self.kv.get(alias_key(name, alias))
        except (KeyNotFound, KeyDeleted):
            return None
        return decode(entry.value, Alias).version if entry.value else None

    async def set_alias(self, name: str, alias: str, version: str, *, at: float) -> None:
        with nats_boundary:
            await self.kv.put(alias_key(name, alias), encode(Alias(version=version, updated_at=at)))

    async def delete_alias(self, name: str, alias: str) -> None:
        with nats_boundary:
            await self.kv.delete(alias_key(name, alias))

    async def aliases(self, name: str) -> dict[str, str]:
        """Alias → version, for every alias of ``name``."""
        found = {}
        for key, value in await snapshot(self.kv, f"alias.{name}.*"):
            parts = parse_key(key)
            if parts is not None:
                found[parts.rest] = decode(value, Alias).version
        return found
