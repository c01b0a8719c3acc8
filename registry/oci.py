"""Pull a Wasm component stored as an OCI artifact: ``oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]``.

The layout is the CNCF wasm working group's "Wasm OCI artifact" (what wkg, wasm-tools and the
oci-wasm crate push): an OCI image manifest whose config has media type
``application/vnd.wasm.config.v0+json`` and whose one layer has media type ``application/wasm``
and holds the component's bytes.

It speaks the OCI distribution API with the standard library only: ``GET /v2/REPO/manifests/REF``,
then ``GET /v2/REPO/blobs/DIGEST`` (following the registry's redirect to its blob storage, without
our credentials when that is another origin), verifying each against its digest and bounding its size.
Pulls are anonymous, answering a registry's bearer-token challenge (``WWW-Authenticate: Bearer
realm=…``) with an anonymous token. Loopback registries are spoken to over http, others over https.

Two nouns live here: the artifact (reference, manifest, layer, digests) and one pull's HTTP
session (``_Session``: deadline, token challenge, redirects, bounded reads). They stay in one
module because the session exists only for ``pull_component`` and shares its error kinds and
limits; split them if a second user of the distribution API appears (a push, say).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import re
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Literal

from registry.errors import RegistryError
from registry.signatures import (
    MAX_PAYLOAD_BYTES,
    MAX_SIGNATURE_LAYERS,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    SignatureLayer,
    signature_tag,
)

OCI_SCHEME = "oci://"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
"""The config media type of the Wasm OCI artifact layout."""
WASM_LAYER = "application/wasm"
"""The layer media type of the Wasm OCI artifact layout: the component's bytes."""

MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST))
"""Indexes are accepted only to say clearly that one was served (a Wasm artifact is one manifest)."""
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The manifest size every registry must accept (OCI distribution spec); anything larger is refused."""
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
READ_CHUNK = 256 * 1024
USER_AGENT = "toolbus-oci/1"
REDIRECTS = frozenset({301, 302, 303, 307, 308})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
HOST_RE = re.compile(rf"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>{_LABEL}(?:\.{_LABEL})*))(?::(?P<port>[0-9]{{1,5}}))?")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"([^"]*)"|([^,\s]*))')

OciErrorKind = Literal[
    "reference",  # the oci:// text does not parse
    "connection",  # cannot connect, TLS failed, or the connection dropped
    "timeout",  # the pull took longer than timeout_s
    "auth",  # the registry refused us, or its token service did
    "not-found",  # no such repository, tag, digest or blob
    "unsupported-manifest",  # an index, an old schema, or several application/wasm layers
    "no-wasm-layer",  # a manifest without an application/wasm layer
    "not-wasm",  # the application/wasm layer is not WebAssembly
    "too-large",  # over max_bytes (or a manifest over 4 MiB)
    "digest-mismatch",  # bytes that do not hash to their descriptor's digest
    "protocol",  # anything else the registry answered that we cannot use
]


class OciError(RegistryError):
    """A pull that failed; the message names the reference and what went wrong.

    Attributes:
        reference: the ``oci://`` reference (as given, or as parsed).
        kind: what went wrong, for callers that branch on it.
        detail: the message without the reference.
    """

    def __init__(self, reference: object, kind: OciErrorKind, detail: str) -> None:
        super().__init__(f"{reference}: {detail}")
        self.reference = str(reference)
        self.kind: OciErrorKind = kind
        self.detail = detail


@dataclass(frozen=True)
class OciReference:
    """A parsed ``oci://HOST[:PORT]/REPO[:TAG][@DIGEST]``; ``tag`` is ``latest`` when neither is given."""

    host: str
    """Host name or IP address (an IPv6 address without its brackets)."""
    port: int | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def registry(self) -> str:
        """``HOST[:PORT]`` as it goes in a URL (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def reference(self) -> str:
        """What the manifest is asked for by: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def is_loopback(self) -> bool:
        """``localhost``, 127.0.0.0/8 or ``::1``: spoken to over http unless told otherwise."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        text = f"{OCI_SCHEME}{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class PulledArtifact:
    """A Wasm component pulled from an OCI registry, its bytes verified against ``layer_digest``."""

    reference: OciReference
    wasm: bytes = field(repr=False)
    manifest_digest: str
    """The digest of the manifest as served (what pins this exact artifact: ``REPO@DIGEST``)."""
    layer_digest: str
    """``sha256:<hex>`` (as the manifest names it) of ``wasm``."""
    config_media_type: str | None
    """``application/vnd.wasm.config.v0+json`` in the Wasm layout; other tools may push another."""
    annotations: dict[str, str]
    """The manifest's annotations (``org.opencontainers.image.*`` and the like)."""
    layer_annotations: dict[str, str]
    """The wasm layer's annotations (e.g. ``org.opencontainers.image.title``, the file name)."""
    signatures: list[SignatureLayer] = field(default_factory=list)
    """The cosign signatures found beside the manifest (``registry.signatures``), when asked for."""


def parse_reference(text: str) -> OciReference:
    """Parse ``oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`` (both ``:TAG@DIGEST`` is allowed too).

    Raises:
        OciError: kind ``reference``, saying which part is wrong.
    """

    def bad(detail: str) -> OciError:
        return OciError(text, "reference", f"{detail} (expected oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST])")

    if not text.startswith(OCI_SCHEME):
        raise bad("not an oci:// reference")
    host_part, slash, path = text[len(OCI_SCHEME) :].partition("/")
    if not slash or not path:
        raise bad("names no repository")
    host_match = HOST_RE.fullmatch(host_part)
    if host_match is None:
        raise bad(f"{host_part!r} is not a host")
    host = host_match["v6"] or host_match["name"]
    if host_match["v6"] is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host_part!r} is not an IPv6 address") from None
    port = int(host_match["port"]) if host_match["port"] is not None else None
    if port is not None and not 0 < port < 65536:
        raise bad(f"port {port} is out of range")
    path, at, digest = path.partition("@")
    if at and not DIGEST_RE.fullmatch(digest):
        raise bad(f"{digest!r} is not a digest (sha256:<64 hex digits>)")
    repository, tag = path, None
    if ":" in path.rsplit("/", 1)[-1]:
        repository, _, tag = path.rpartition(":")
        if not TAG_RE.fullmatch(tag):
            raise bad(f"{tag!r} is not a tag")
    if not REPOSITORY_RE.fullmatch(repository):
        raise bad(f"{repository!r} is not a repository name (lowercase letters, digits, . _ - and /)")
    if tag is None and not at:
        tag = "latest"
    return OciReference(host=host, port=port, repository=repository, tag=tag, digest=digest if at else None)


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """``ALGORITHM:<hex>`` of ``data`` (sha256 or sha512)."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, digest: str, *, reference: object, what: str) -> None:
    """Refuse ``data`` unless it hashes to ``digest`` (``sha256:<hex>`` or ``sha512:<hex>``).

    Raises:
        OciError: kind ``digest-mismatch`` naming ``what`` and both digests, or ``protocol`` when
            the digest is not one we can check.
    """
    if not DIGEST_RE.fullmatch(digest):
        raise OciError(reference, "protocol", f"{what} has digest {digest!r}, which is not sha256 or sha512")
    actual = compute_digest(data, digest.partition(":")[0])
    if actual != digest:
        raise OciError(
            reference, "digest-mismatch", f"{what} does not match its digest: expected {digest}, got {actual}"
        )


def pull_component(
    ref: OciReference,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    insecure: bool | None = None,
    signatures: bool = False,
) -> PulledArtifact:
    """Pull the ``application/wasm`` layer of ``ref``'s manifest, verified against its digest.

    Args:
        ref: from :func:`parse_reference`.
        timeout_s: the whole pull's deadline (connecting, token, manifest, redirects and blob).
        max_bytes: the largest component accepted; its descriptor's size is checked before download.
        insecure: ``True`` speaks http, ``False`` https; ``None`` (default) http for loopback hosts
            (localhost, 127.0.0.0/8, ::1) and https for every other host.
        signatures: also read the cosign signatures stored beside the manifest (unverified: that
            is ``registry.signatures.verify``'s job), within the same deadline.

    Raises:
        OciError: naming the reference and what went wrong; ``kind`` says which.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s}")
    session = _Session(ref, timeout_s, ref.is_loopback if insecure is None else insecure)

    what = f"manifest {ref.reference}"
    reply = session.get(f"/v2/{ref.repository}/manifests/{ref.reference}", MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, what)
    if reply.truncated:
        raise OciError(ref, "too-large", f"{what} is over {MAX_MANIFEST_BYTES} bytes")
    served_digest = reply.headers.get("Docker-Content-Digest")
    manifest_digest = ref.digest or (
        served_digest if served_digest and DIGEST_RE.fullmatch(served_digest) else compute_digest(reply.body)
    )
    verify_digest(reply.body, manifest_digest, reference=ref, what=what)
    manifest = _decode_manifest(ref, reply.body, reply.headers.get_content_type())
    layer = _wasm_layer(ref, manifest)
    digest, size = layer.digest, layer.size
    if size > max_bytes:
        raise OciError(ref, "too-large", f"wasm layer {digest} is {size} bytes, over the limit of {max_bytes}")

    what = f"wasm layer {digest}"
    blob = session.get(f"/v2/{ref.repository}/blobs/{digest}", f"{WASM_LAYER}, */*", size, what)
    if blob.truncated or len(blob.body) != size:
        served = "more than" if blob.truncated else f"{len(blob.body)} bytes, not"
        raise OciError(ref, "digest-mismatch", f"{what}: the registry served {served} the {size} bytes declared")
    verify_digest(blob.body, digest, reference=ref, what=what)
    if not blob.body.startswith(b"\0asm"):
        raise OciError(ref, "not-wasm", f"{what} is not WebAssembly (it starts {blob.body[:8]!r})")
    config = manifest.get("config")
    config_media_type = config.get("mediaType") if isinstance(config, dict) else None
    found = _signatures(session, manifest_digest) if signatures else []
    return PulledArtifact(
        reference=ref,
        wasm=blob.body,
        manifest_digest=manifest_digest,
        layer_digest=digest,
        config_media_type=config_media_type if isinstance(config_media_type, str) else None,
        annotations=_annotations(manifest),
        layer_annotations=layer.annotations,
        signatures=found,
    )


def _signatures(session: _Session, manifest_digest: str) -> list[SignatureLayer]:
    """The signature layers of the ``sha256-<hex>.sig`` manifest beside ``manifest_digest`` (none: [])."""
    ref = session.ref
    what = f"signature manifest {signature_tag(manifest_digest)}"
    try:
        reply = session.get(
            f"/v2/{ref.repository}/manifests/{signature_tag(manifest_digest)}",
            MANIFEST_ACCEPT,
            MAX_MANIFEST_BYTES,
            what,
        )
    except OciError as exc:
        if exc.kind == "not-found":
            return []
        raise
    if reply.truncated:
        raise OciError(ref, "too-large", f"{what} is over {MAX_MANIFEST_BYTES} bytes")
    manifest = _decode_manifest(ref, reply.body, reply.headers.get_content_type())
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise OciError(ref, "protocol", f"{what} has no list of layers")
    signed = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == SIMPLE_SIGNING]
    if len(signed) > MAX_SIGNATURE_LAYERS:
        raise OciError(ref, "too-large", f"{what} has {len(signed)} signatures, over {MAX_SIGNATURE_LAYERS}")
    found = []
    for layer in signed:
        digest, size = layer.get("digest"), layer.get("size")
        signature = _annotations(layer).get(SIGNATURE_ANNOTATION)
        if not isinstance(digest, str) or not isinstance(size, int) or signature is None:
            continue  # not a cosign signature layer: nothing to verify
        if size > MAX_PAYLOAD_BYTES or not DIGEST_RE.fullmatch(digest):
            raise OciError(ref, "protocol", f"{what} has a signature payload {digest!r} we will not read")
        blob = session.get(
            f"/v2/{ref.repository}/blobs/{digest}", "*/*", MAX_PAYLOAD_BYTES, f"signature payload {digest}"
        )
        verify_digest(blob.body, digest, reference=ref, what=f"signature payload {digest}")
        found.append(SignatureLayer(payload=blob.body, signature=signature))
    return found


def _decode_manifest(ref: OciReference, body: bytes, content_type: str) -> dict[str, Any]:
    try:
        manifest = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise OciError(ref, "protocol", "the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise OciError(ref, "protocol", "the manifest is not a JSON object")
    media_type = manifest.get("mediaType") or content_type
    if media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST) or "manifests" in manifest:
        raise OciError(
            ref,
            "unsupported-manifest",
            "is an image index (one manifest per platform), not a Wasm artifact; name its manifest by digest",
        )
    if manifest.get("schemaVersion") != 2:
        raise OciError(
            ref, "unsupported-manifest", f"manifest schemaVersion is {manifest.get('schemaVersion')!r}, not 2"
        )
    return manifest


@dataclass(frozen=True)
class _Layer:
    digest: str
    size: int
    annotations: dict[str, str]


def _wasm_layer(ref: OciReference, manifest: dict[str, Any]) -> _Layer:
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise OciError(ref, "protocol", "the manifest has no list of layers")
    wasm = [layer for layer in layers if layer.get("mediaType") == WASM_LAYER]
    if not wasm:
        found = ", ".join(str(layer.get("mediaType")) for layer in layers) or "none"
        raise OciError(ref, "no-wasm-layer", f"the manifest has no {WASM_LAYER} layer (its layers: {found})")
    if len(wasm) > 1:
        raise OciError(ref, "unsupported-manifest", f"the manifest has {len(wasm)} {WASM_LAYER} layers, not one")
    layer = wasm[0]
    digest, size = layer.get("digest"), layer.get("size")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise OciError(ref, "protocol", f"the wasm layer's digest {digest!r} is not sha256 or sha512")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OciError(ref, "protocol", f"the wasm layer's size {size!r} is not a byte count")
    return _Layer(digest, size, _annotations(layer))


def _annotations(descriptor: dict[str, Any]) -> dict[str, str]:
    found = descriptor.get("annotations")
    if not isinstance(found, dict):
        return {}
    return {key: value for key, value in found.items() if isinstance(key, str) and isinstance(value, str)}


@dataclass
class _Reply:
    status: int
    headers: Message
    body: bytes
    truncated: bool
    """More than the limit was there (``body`` holds at most the limit)."""


def _origin(url: urllib.parse.SplitResult) -> tuple[str, str, int]:
    return url.scheme, (url.hostname or "").lower(), url.port or (443 if url.scheme == "https" else 80)


class _Session:
    """One pull's HTTP: the deadline, the scheme, and the bearer token once the registry asked for one."""

    def __init__(self, ref: OciReference, timeout_s: float, insecure: bool) -> None:
        self.ref = ref
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.insecure = insecure
        self.base = f"{'http' if insecure else 'https'}://{ref.registry}"
        self.origin = _origin(urllib.parse.urlsplit(self.base))
        self.token: str | None = None

    def get(self, path: str, accept: str, limit: int, what: str) -> _Reply:
        """GET ``path`` from the registry (answering one auth challenge); raise unless it is 200."""
        for attempt in range(2):
            reply = self._get(self.base + path, accept, limit)
            if reply.status == 401 and attempt == 0:
                challenge = reply.headers.get("WWW-Authenticate")
                if not challenge:
                    raise OciError(self.ref, "auth", f"the registry refused {what} (HTTP 401) without a challenge")
                self._authenticate(challenge)
                continue
            break
        if reply.status == 200:
            return reply
        errors = _registry_errors(reply.body)
        if reply.status == 404:
            raise OciError(self.ref, "not-found", f"{what} not found{errors}")
        if reply.status in (401, 403):
            raise OciError(self.ref, "auth", f"the registry refused {what} (HTTP {reply.status}){errors}")
        raise OciError(self.ref, "protocol", f"the registry answered HTTP {reply.status} for {what}{errors}")

    def _authenticate(self, challenge: str) -> None:
        scheme, _, text = challenge.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise OciError(
                self.ref, "auth", f"the registry asks for {scheme} credentials; only anonymous pulls are supported"
            )
        params = {key.lower(): quoted or bare for key, quoted, bare in _CHALLENGE_PARAM.findall(text)}
        realm = params.get("realm", "")
        realm_url = urllib.parse.urlsplit(realm)
        if realm_url.scheme not in ("http", "https") or not realm_url.hostname:
            raise OciError(self.ref, "auth", f"the registry's token realm {realm!r} is not an http(s) URL")
        if realm_url.scheme == "http" and not self.insecure:
            raise OciError(self.ref, "auth", f"the registry's token realm {realm} is not https")
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        url = realm + ("&" if realm_url.query else "?") + urllib.parse.urlencode(query)
        reply = self._get(url, "application/json", MAX_TOKEN_BYTES)
        if reply.status != 200 or reply.truncated:
            raise OciError(self.ref, "auth", f"the token service {realm} answered HTTP {reply.status}")
        try:
            answer = json.loads(reply.body)
        except (ValueError, UnicodeDecodeError):
            answer = None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise OciError(self.ref, "auth", f"the token service {realm} answered no token")
        self.token = token

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise OciError(self.ref, "timeout", f"timed out after {self.timeout_s:g} s")
        return left

    def _get(self, url: str, accept: str, limit: int) -> _Reply:
        """GET ``url``, following redirects; the token goes only to the registry's own origin."""
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            headers = {"Accept": accept, "User-Agent": USER_AGENT}
            if self.token is not None and _origin(parts) == self.origin:
                headers["Authorization"] = f"Bearer {self.token}"
            connection = self._connect(parts)
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                try:
                    connection.request("GET", target, headers=headers)
                    response = connection.getresponse()
                    if response.status in REDIRECTS:
                        location = response.getheader("Location")
                        if not location:
                            raise OciError(self.ref, "protocol", f"HTTP {response.status} from {url} has no Location")
                        url = self._redirect_target(url, location)
                        continue
                    body_limit = limit if response.status == 200 else MAX_ERROR_BODY_BYTES
                    body, truncated = self._read(connection, response, body_limit)
                    return _Reply(response.status, response.headers, body, truncated)
                except (OSError, http.client.HTTPException) as exc:
                    raise self._transport_error(parts, exc) from exc
            finally:
                connection.close()
        raise OciError(self.ref, "protocol", f"more than {MAX_REDIRECTS} redirects")

    def _redirect_target(self, url: str, location: str) -> str:
        target = urllib.parse.urljoin(url, location)
        scheme = urllib.parse.urlsplit(target).scheme
        if scheme not in ("http", "https"):
            raise OciError(self.ref, "protocol", f"redirected to {target}, which is not http(s)")
        if scheme == "http" and url.startswith("https:") and not self.insecure:
            raise OciError(self.ref, "protocol", f"redirected from https to plain http ({target})")
        return target

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self._remaining(), context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(host, port, timeout=self._remaining())

    def _read(
        self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse, limit: int
    ) -> tuple[bytes, bool]:
        length = response.getheader("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            return b"", True
        body = bytearray()
        while len(body) <= limit:
            if connection.sock is not None:
                connection.sock.settimeout(self._remaining())
            chunk = response.read(min(READ_CHUNK, limit + 1 - len(body)))
            if not chunk:
                return bytes(body), False
            body += chunk
        return bytes(body[:limit]), True

    def _transport_error(self, parts: urllib.parse.SplitResult, exc: BaseException) -> OciError:
        where = parts.netloc
        if isinstance(exc, TimeoutError):
            return OciError(self.ref, "timeout", f"timed out after {self.timeout_s:g} s talking to {where}")
        if isinstance(exc, ConnectionRefusedError):
            return OciError(self.ref, "connection", f"cannot connect to {where}: connection refused")
        if isinstance(exc, ssl.SSLError):
            hint = " (an http-only registry? pass insecure=True)" if parts.scheme == "https" else ""
            return OciError(self.ref, "connection", f"TLS with {where} failed: {exc.reason or exc}{hint}")
        if isinstance(exc, http.client.HTTPException):
            return OciError(self.ref, "connection", f"{where} broke the HTTP exchange: {exc!r}")
        return OciError(self.ref, "connection", f"cannot talk to {where}: {exc}")


def _registry_errors(body: bytes) -> str:
    """``: CODE: message; …`` from a registry's ``{"errors": [...]}`` body, or nothing."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return ""
    if not isinstance(errors, list):
        return ""
    said = [
        f"{error.get('code')}: {error.get('message')}" if error.get("message") else str(error.get("code"))
        for error in errors
        if isinstance(error, dict)
    ]
    return f" ({'; '.join(said)})" if said else ""
