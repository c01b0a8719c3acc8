"""Release verbs over the bus: publish, rollback, retire, deprecate, versions.

Each is a request on ``PREFIX.registry.<verb>`` (registry replicas share a queue group) whose
reply is a ``ReleaseReply`` — the package's versions after the change — or a typed
``RELEASE_REJECTED`` error saying why. Every change is also a ``RegistryEvent`` on
``PREFIX.events.<kind>``; the tools themselves change in the catalogue (``registry.catalogue``),
which follows the packages bucket.

Publishing never runs Wasm in the registry: the artifact must already be in the artifact store
(``toolbus publish`` uploads it), and one worker — any, through the introspect queue group —
loads it with the settings it will run with and derives its tools. A component that cannot
load is refused before anything is recorded. So is a package named like a component that workers
serve from their own config: the two would fight over the same tool names.

An ``oci://`` artifact is pulled by the registry itself (``PublishRequest.oci``), with the cosign
signatures beside it: the one place that decides whether an artifact is trusted, so that under
``[registry] require_signatures`` nothing unsigned is stored or recorded, whoever asks
(docs/signatures.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.connection import send_request
from bus.errors import BusTimeout, NoResponders
from bus.replies import send_error
from bus.subjects import Header, Subjects
from registry.errors import ReleaseError, SignatureError
from registry.oci import OCI_SCHEME, OciError, parse_reference, pull_component
from registry.signatures import Signer, TrustedKey, verify
from schemas.codec import DecodeError, decode, encode
from schemas.errors import ErrorCode
from schemas.wire import (
    ErrorReply,
    IntrospectReply,
    IntrospectRequest,
    PackageVersion,
    PublishRequest,
    RegistryEvent,
    ReleaseReply,
    ReleaseRequest,
    ToolDescriptor,
    VersionSummary,
)
from stores import (
    LATEST,
    InvalidName,
    PackageStore,
    VersionExists,
    artifact_digest,
    check_alias,
    check_name,
    check_version,
    version_order,
)

log = structlog.get_logger(__name__)

INTROSPECT_TIMEOUT_S = 120.0
"""A worker compiles the artifact to derive its tools: ~6 s for a componentize-py component."""

Handler = Callable[[Msg], Awaitable[None]]


@dataclass(frozen=True)
class SignaturePolicy:
    """Which signatures the registry trusts, and whether it publishes anything else."""

    trusted: list[TrustedKey] = field(default_factory=list)
    required: bool = False


class Releases:
    """Answers the release verbs for one deployment."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        store: PackageStore,
        configured: Callable[[str], list[str]],
        signatures: SignaturePolicy | None = None,
    ) -> None:
        self._signatures = signatures or SignaturePolicy()
        self._nc = nc
        self._subjects = subjects
        self._store = store
        self._configured = configured  # the catalogue's: tools workers serve from their config as a component

    def handler(self, verb: str) -> Handler:
        """The message callback of ``verb``: decode, act, reply (an error reply on any refusal)."""
        act: dict[str, Callable[[bytes], Awaitable[ReleaseReply]]] = {
            "publish": self._publish,
            "rollback": self._rollback,
            "retire": self._retire,
            "deprecate": self._deprecate,
            "versions": self._versions,
        }
        chosen = act[verb]

        async def handle(msg: Msg) -> None:
            if not msg.reply:
                return
            try:
                reply = await chosen(msg.data)
            except (ReleaseError, InvalidName, VersionExists, DecodeError, OciError, SignatureError) as exc:
                await send_error(self._nc, msg.reply, ErrorCode.RELEASE_REJECTED, f"{verb}: {exc}")
                return
            except Exception:  # the outermost handler: a bug must still produce a reply
                log.exception("release verb failed", verb=verb)
                await send_error(self._nc, msg.reply, ErrorCode.INTERNAL, f"{verb}: internal error; see registry logs")
                return
            await msg.respond(encode(reply))

        return handle

    # -- verbs ----------------------------------------------------------------------------------
    async def _publish(self, data: bytes) -> ReleaseReply:
        request = decode(data, PublishRequest)
        check_name(request.name)
        check_version(request.version)
        for alias in request.aliases:
            check_alias(alias)
        configured = self._configured(request.name)
        if configured:
            # Its tools would be replaced by the package's, and retiring the package would then
            # take them offline until the workers restart: two owners of one name.
            raise ReleaseError(
                f"{request.name!r} is a component workers serve from their own config (tools: "
                f"{', '.join(configured)}); publish under another name (--name), or remove it from "
                "the workers' [[components]] first"
            )
        existing = await self._store.version(request.name, request.version)
        signer: Signer | None = None
        if request.oci:
            request, signer = await self._pull(request, existing is None)
        elif self._signatures.required:
            raise ReleaseError(
                "this registry requires signatures ([registry] require_signatures): publish a signed "
                "oci:// artifact, not a file"
            )
        elif not request.digest:
            raise ReleaseError("name the artifact: a digest in the artifact store, or an oci:// reference")
        if existing is not None:
            if existing.digest != request.digest:
                raise ReleaseError(
                    f"{request.name} {request.version} is already published with {existing.digest}; "
                    "versions are immutable: publish a new version"
                )
            return await self._summary(request.name, f"{request.name} {request.version} was already published")
        if not await self._store.has_artifact(request.digest):
            raise ReleaseError(f"artifact {request.digest} is not in the artifact store; upload it first")
        tools = await self._introspect(request)
        record = PackageVersion(
            name=request.name,
            version=request.version,
            digest=request.digest,
            tools=[msgspec.structs.replace(t, version=request.version, digest=request.digest) for t in tools],
            settings=request.settings,
            published_at=time.time(),
            source=request.source,
            signer=signer.name if signer else "",
            signer_key=signer.fingerprint if signer else "",
        )
        await self._store.create_version(record)
        for alias in request.aliases:
            await self._store.set_alias(request.name, alias, request.version, at=record.published_at)
        await self._event(
            "published",
            request.name,
            request.version,
            request.digest,
            tools=[t.name for t in record.tools],
            signer=signer,
        )
        log.info(
            "published", package=request.name, version=request.version, digest=request.digest, signer=record.signer
        )
        return await self._summary(request.name, f"published {request.name} {request.version}")

    async def _rollback(self, data: bytes) -> ReleaseReply:
        request = decode(data, ReleaseRequest)
        record = await self._existing(request)
        if record.retired:
            raise ReleaseError(f"{request.name} {record.version} is retired")
        check_alias(request.alias)
        if not self._may_serve(record):
            signed = f"signed by {record.signer} ({record.signer_key})" if record.signer_key else "unsigned"
            raise SignatureError(
                f"{request.name} {record.version} is {signed}, not by a key trusted now; under [registry] "
                "require_signatures an alias points only at versions signed by a trusted key"
            )
        await self._store.set_alias(request.name, request.alias, record.version, at=time.time())
        await self._event("rolled_back", request.name, record.version, record.digest)
        return await self._summary(request.name, f"{request.name} {request.alias} → {record.version}")

    async def _retire(self, data: bytes) -> ReleaseReply:
        request = decode(data, ReleaseRequest)
        check_name(request.name)
        versions = await self._store.versions(request.name)
        if not versions:
            raise ReleaseError(f"no package {request.name!r} is published")
        retiring = [await self._existing(request)] if request.version else versions
        for record in retiring:
            if not record.retired:
                await self._store.update_version(msgspec.structs.replace(record, retired=True))
        retired = {r.version for r in retiring}
        remaining = [r for r in versions if r.version not in retired and not r.retired and self._may_serve(r)]
        for alias, version in (await self._store.aliases(request.name)).items():
            if version not in retired:
                continue
            if alias == LATEST and remaining:
                newest = max(remaining, key=lambda r: version_order(r.version))
                await self._store.set_alias(request.name, alias, newest.version, at=time.time())
            else:
                await self._store.delete_alias(request.name, alias)
        for record in retiring:
            await self._event("retired", request.name, record.version, record.digest)
        what = f"{request.name} {request.version}" if request.version else f"every version of {request.name}"
        return await self._summary(request.name, f"retired {what}")

    async def _deprecate(self, data: bytes) -> ReleaseReply:
        request = decode(data, ReleaseRequest)
        record = await self._existing(request)
        if not request.reason.strip():
            raise ReleaseError("give a reason: it is shown in the tools' descriptions")
        await self._store.update_version(msgspec.structs.replace(record, deprecated=request.reason.strip()))
        await self._event("deprecated", request.name, record.version, record.digest)
        return await self._summary(request.name, f"deprecated {request.name} {record.version}")

    async def _versions(self, data: bytes) -> ReleaseReply:
        request = decode(data, ReleaseRequest)
        check_name(request.name)
        return await self._summary(request.name)

    # -- helpers --------------------------------------------------------------------------------
    def _may_serve(self, record: PackageVersion) -> bool:
        """Whether an alias may be pointed at ``record`` (by rollback, or by retire moving ``latest``).

        Under ``require_signatures`` only a version signed by a key trusted now: an alias is what
        workers serve, and a version recorded before the policy (or signed by a key since removed)
        made latest again would publish unsigned code by another door (attack kept in
        tests/registry/test_signatures.py). Versions already pointed at are left as they are.
        """
        return not self._signatures.required or record.signer_key in {k.fingerprint for k in self._signatures.trusted}

    async def _pull(self, request: PublishRequest, store: bool) -> tuple[PublishRequest, Signer | None]:
        """Pull ``request.oci`` and check its signature; store it (when ``store``) only once trusted.

        Returns the request naming the pulled artifact's digest, and who signed it (None: unsigned,
        which only a registry that does not require signatures accepts).

        Raises:
            OciError: the pull failed (the message names the reference and why).
            SignatureError: it must be signed and is not, or not by a trusted key, or not this artifact.
        """
        if not request.oci.startswith(OCI_SCHEME):
            raise ReleaseError(f"oci: {request.oci!r} is not an oci:// reference")
        policy = self._signatures
        pulled = await asyncio.to_thread(pull_component, parse_reference(request.oci), signatures=bool(policy.trusted))
        signer: Signer | None = None
        try:
            signer = verify(pulled.signatures, pulled.manifest_digest, policy.trusted)
        except SignatureError as exc:
            if policy.required:
                raise SignatureError(f"{request.oci}: refused: {exc}") from None
            if pulled.signatures:  # signed, but not as we trust: say so in the log, publish unsigned
                log.warning("signature not trusted", reference=request.oci, problem=str(exc))
        digest = await self._store.put_artifact(pulled.wasm) if store else artifact_digest(pulled.wasm)
        source = request.source or request.oci
        return msgspec.structs.replace(request, digest=digest, source=source), signer

    async def _existing(self, request: ReleaseRequest) -> PackageVersion:
        """The version ``request`` names (a version, or an alias pointing at one)."""
        check_name(request.name)
        if not request.version:
            raise ReleaseError("name a version")
        version = request.version
        if not version[0].isdigit():  # an alias, e.g. `toolbus rollback calc stable`
            version = await self._store.alias(request.name, version) or ""
            if not version:
                raise ReleaseError(f"{request.name} has no alias {request.version!r}")
        record = await self._store.version(request.name, version)
        if record is None:
            raise ReleaseError(f"{request.name} {version} is not published")
        return record

    async def _introspect(self, request: PublishRequest) -> list[ToolDescriptor]:
        body = encode(IntrospectRequest(name=request.name, digest=request.digest, settings=request.settings))
        try:
            reply = await send_request(self._nc, self._subjects.worker_introspect, body, timeout_s=INTROSPECT_TIMEOUT_S)
        except NoResponders:
            raise ReleaseError("no worker is running to load and check the component; start one") from None
        except BusTimeout:
            raise ReleaseError(f"no worker loaded the component within {INTROSPECT_TIMEOUT_S:g} s") from None
        if reply.headers and Header.ERROR in reply.headers:
            raise ReleaseError(decode(reply.data, ErrorReply).error.message)
        return list(decode(reply.data, IntrospectReply).tools)

    async def _summary(self, name: str, message: str = "") -> ReleaseReply:
        aliases = await self._store.aliases(name)
        summaries = [
            VersionSummary(
                version=r.version,
                digest=r.digest,
                tools=[t.name for t in r.tools],
                aliases=sorted(a for a, v in aliases.items() if v == r.version),
                published_at=r.published_at,
                deprecated=r.deprecated,
                retired=r.retired,
                signer=r.signer,
                signer_key=r.signer_key,
            )
            for r in await self._store.versions(name)
        ]
        return ReleaseReply(name=name, versions=summaries, message=message)

    async def _event(
        self,
        kind: str,
        name: str,
        version: str,
        digest: str,
        *,
        tools: list[str] | None = None,
        signer: Signer | None = None,
    ) -> None:
        event = RegistryEvent(
            kind=kind,  # type: ignore[arg-type]
            name=name,
            version=version,
            digest=digest,
            tools=tools or [],
            at=time.time(),
            signer=signer.name if signer else "",
            signer_key=signer.fingerprint if signer else "",
        )
        await self._nc.publish(self._subjects.event(kind), encode(event))
