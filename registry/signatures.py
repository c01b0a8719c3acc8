"""Cosign signatures of OCI artifacts, ``cosign sign --key`` format, verified offline.

The format (cosign's ``specs/SIGNATURE_SPEC.md``, "tag-based discovery"):

- The signature of the manifest ``sha256:<hex>`` of ``REPO`` lives beside it, in the same
  repository, as an OCI image manifest tagged ``sha256-<hex>.sig``.
- Each layer of that manifest is one signature: its media type is
  ``application/vnd.dev.cosign.simplesigning.v1+json``, its blob the *payload* — Red Hat's
  "simple signing" JSON naming the signed manifest digest
  (``{"critical":{"identity":{"docker-reference":REPO},"image":{"docker-manifest-digest":DIGEST},
  "type":"cosign container image signature"},"optional":…}``) — and its annotation
  ``dev.cosignproject.cosign/signature`` the base64 ECDSA-P256/SHA-256 signature (ASN.1 DER) over
  the payload's bytes. Several signatures are several layers of the one manifest.
- Public keys are PEM ``PUBLIC KEY`` (PKIX SubjectPublicKeyInfo), as ``cosign generate-key-pair``
  writes ``cosign.pub``.

No maintained Python library speaks this format (sigstore-python does keyless bundles, not
``--key`` signatures in a registry), so the format is here, small; the cryptography is
``cryptography``'s and the registry push is oras's. Private keys are unencrypted PKCS#8 PEM
(``toolbus keys generate``); cosign's own encrypted ``cosign.key`` is not read.

What a signature proves is checked in full: the signature verifies under a trusted key, its payload
is of the cosign type and names *this* manifest digest (a signature copied from another image is
refused), and the manifest's one ``application/wasm`` layer is what the digest pins (checked by the
pull, ``registry.oci``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import SignatureError

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
"""The media type of a signature layer: its blob is the simple-signing payload."""
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
"""The layer annotation holding the base64 signature over the payload."""
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
"""The config media type cosign gives a signature manifest."""
MAX_SIGNATURE_LAYERS = 64
"""More signatures than anyone attaches; a manifest with more is refused rather than checked."""
MAX_PAYLOAD_BYTES = 64 * 1024
"""A payload is a few hundred bytes; larger ones are refused unread."""


def signature_tag(manifest_digest: str) -> str:
    """``sha256-<hex>.sig``: where cosign keeps the signatures of ``manifest_digest``."""
    algorithm, _, hexdigest = manifest_digest.partition(":")
    return f"{algorithm}-{hexdigest}.sig"


@dataclass(frozen=True)
class SignatureLayer:
    """One signature as read from the registry: the payload bytes and the base64 signature."""

    payload: bytes
    signature: str


@dataclass(frozen=True)
class TrustedKey:
    """A public key signatures are checked against; ``name`` is what people see (its file's stem)."""

    name: str
    fingerprint: str
    key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class Signer:
    """Who signed a verified artifact."""

    name: str
    fingerprint: str


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """``sha256:<first 16 hex>`` of the key's DER SubjectPublicKeyInfo: short, stable, printable."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key pair: (private key as PKCS#8 PEM, public key as PKIX PEM)."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 private key in the PEM file ``path``.

    Raises:
        SignatureError: unreadable, encrypted, or not a P-256 key.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SignatureError(f"{path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:  # TypeError: it is encrypted
        raise SignatureError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError(f"{path}: not an ECDSA P-256 key (cosign signs with P-256)")
    return key


def load_trusted_key(path: Path) -> TrustedKey:
    """The public key in the PEM file ``path`` (``cosign.pub``'s format).

    Raises:
        SignatureError: unreadable, or not an ECDSA P-256 public key.
    """
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SignatureError(f"{path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SignatureError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError(f"{path}: not an ECDSA P-256 public key (cosign signs with P-256)")
    return TrustedKey(name=path.stem, fingerprint=fingerprint(key), key=key)


def simple_signing_payload(docker_reference: str, manifest_digest: str) -> bytes:
    """The payload ``cosign sign`` signs for ``REPO@manifest_digest`` (compact JSON, as cosign writes it)."""
    payload = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": None,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    """The base64 ECDSA-P256/SHA-256 signature (DER) of ``payload``: the annotation's value."""
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def signature_manifest(layers: list[dict[str, Any]], config_digest: str, config_size: int) -> dict[str, Any]:
    """The OCI manifest holding the signature layers (descriptors as :func:`signature_descriptor` makes)."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    }


def signature_descriptor(payload: bytes, signature: str) -> dict[str, Any]:
    """The layer descriptor of one signature: the payload blob, the signature in its annotation."""
    return {
        "mediaType": SIMPLE_SIGNING,
        "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "annotations": {SIGNATURE_ANNOTATION: signature},
    }


def signed_digest(payload: bytes) -> str:
    """The manifest digest a simple-signing payload names.

    Raises:
        SignatureError: it is not a cosign simple-signing payload.
    """
    try:
        document = json.loads(payload)
        critical = document["critical"]
        digest = critical["image"]["docker-manifest-digest"]
        kind = critical["type"]
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):
        raise SignatureError("a signature's payload is not a cosign simple-signing document") from None
    if kind != PAYLOAD_TYPE or not isinstance(digest, str):
        raise SignatureError(f"a signature's payload is of type {kind!r}, not {PAYLOAD_TYPE!r}")
    return digest


def verify(layers: list[SignatureLayer], manifest_digest: str, trusted: list[TrustedKey]) -> Signer:
    """The first trusted key that signed ``manifest_digest`` among ``layers``.

    Raises:
        SignatureError: no signature at all, none by a trusted key, or none that covers this
            digest (the message says which, naming the keys that were tried).
    """
    if not layers:
        raise SignatureError(f"{manifest_digest} is not signed (no {signature_tag(manifest_digest)} in the registry)")
    if not trusted:
        raise SignatureError("no trusted keys are configured ([registry] trusted_keys)")
    problems: list[str] = []
    for layer in layers:
        try:
            raw = base64.b64decode(layer.signature, validate=True)
        except (binascii.Error, ValueError):
            problems.append("a signature that is not base64")
            continue
        signer = next((key for key in trusted if _verifies(key, raw, layer.payload)), None)
        if signer is None:
            problems.append("a signature by no trusted key")
            continue
        named = signed_digest(layer.payload)
        if named != manifest_digest:
            problems.append(f"a signature by {signer.name} ({signer.fingerprint}) for another artifact, {named}")
            continue
        return Signer(name=signer.name, fingerprint=signer.fingerprint)
    keys = ", ".join(f"{key.name} ({key.fingerprint})" for key in trusted)
    raise SignatureError(
        f"{manifest_digest} has no valid signature by a trusted key ({keys}): found {'; '.join(problems)}"
    )


def _verifies(key: TrustedKey, signature: bytes, payload: bytes) -> bool:
    try:
        key.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def push_signature(
    registry: str,
    repository: str,
    manifest_digest: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    insecure: bool,
    scratch: Path,
) -> str:
    """Sign ``REGISTRY/REPOSITORY@manifest_digest`` and push the signature beside it, as ``cosign sign``.

    Other keys' signatures already there are kept (cosign appends a layer per signature); this
    key's earlier one is replaced. Returns the
    signature tag. ``scratch`` is a directory for the blobs oras uploads from files.

    Raises:
        SignatureError: the registry refused the push.
    """
    import oras.client  # here, not at the top: only signing pushes, and oras brings requests

    docker_reference = f"{registry}/{repository}"
    payload = simple_signing_payload(docker_reference, manifest_digest)
    ours = signature_descriptor(payload, sign(key, payload))
    tag = signature_tag(manifest_digest)
    target = f"{docker_reference}:{tag}"
    client = oras.client.OrasClient(insecure=insecure)
    try:
        container = client.get_container(target)
        found = client.do_request(
            f"{client.prefix}://{container.manifest_url()}", "GET", headers={"Accept": OCI_MANIFEST}
        )
    except Exception as exc:  # requests' and oras' errors: one boundary, one message
        raise SignatureError(f"{target}: reading the signatures already there failed: {exc}") from exc
    if found.status_code == 200:  # cosign appends: keep the other keys' signatures, replace our own
        # Every key signs the same payload (one layer digest): tell our old signature by verifying it.
        layers = [layer for layer in found.json().get("layers", []) if not _signed_by(key, layer, payload)]
    elif found.status_code == 404:
        layers = []
    else:
        raise SignatureError(f"{target}: the registry answered HTTP {found.status_code} for the signatures")
    config = b"{}"
    blobs = [(payload, ours), (config, {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)})]
    try:
        for data, descriptor in blobs:
            path = scratch / descriptor["digest"].replace(":", "-")
            path.write_bytes(data)
            response = client.upload_blob(str(path), container, descriptor)
            if response.status_code not in (200, 201, 202):
                raise SignatureError(f"{target}: the registry refused a signature blob (HTTP {response.status_code})")
        manifest = signature_manifest([*layers, ours], _digest(config), len(config))
        response = client.upload_manifest(manifest, container)
    except SignatureError:
        raise
    except Exception as exc:  # requests' and oras' errors: one boundary, one message
        raise SignatureError(f"{target}: pushing the signature failed: {exc}") from exc
    if response.status_code not in (200, 201):
        raise SignatureError(f"{target}: the registry refused the signature (HTTP {response.status_code})")
    return tag


def _signed_by(key: ec.EllipticCurvePrivateKey, layer: dict[str, Any], payload: bytes) -> bool:
    """Whether ``layer`` is ``key``'s signature of ``payload`` (a re-sign replaces it)."""
    annotations = layer.get("annotations")
    signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if layer.get("digest") != _digest(payload) or not isinstance(signature, str):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    public = key.public_key()
    return _verifies(TrustedKey("", fingerprint(public), public), raw, payload)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
