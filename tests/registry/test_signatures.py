"""Cosign signatures: the format against a signature made without toolbus, then signed publish,
verified pull and every refusal through the real CLI, a real registry, real workers and Debian's
docker-registry."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.client import Client as NatsClient

from bus.embedded import EmbeddedNatsServer
from bus.registry_requests import RegistryRefused
from bus.registry_requests import release as request_release
from bus.subjects import Subjects
from registry.errors import SignatureError
from registry.oci import OCI_MANIFEST, compute_digest
from registry.signatures import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    SignatureLayer,
    TrustedKey,
    fingerprint,
    generate_key_pair,
    load_private_key,
    load_trusted_key,
    push_signature,
    sign,
    signature_tag,
    signed_digest,
    simple_signing_payload,
    verify,
)
from schemas.codec import decode, encode
from schemas.config import RegistrySettings, load_settings
from schemas.errors import ConfigError
from schemas.wire import PackageVersion, PublishRequest, RegistryEvent
from stores import artifact_digest
from tests.conftest import answer_component, nats_settings, toolbus
from tests.registry.conftest import Deployment, OciTestRegistry
from tests.registry.test_oci import with_custom_section

FIXTURES = Path(__file__).parent / "cosign"
FIXTURE_DIGEST = "sha256:5f481572d088dc4023afb35fced9530ced3d9b03bf7299c6f492163cb9f0452e"


# ---------------------------------------------------------------------------------------------
# The format, against a signature OpenSSL made by the spec's steps (tests/registry/cosign/README.md)


def test_a_signature_made_without_toolbus_verifies_and_its_payload_is_ours_byte_for_byte() -> None:
    payload = (FIXTURES / "payload.json").read_bytes()
    layer = SignatureLayer(payload=payload, signature=(FIXTURES / "payload.sig").read_text().strip())
    trusted = load_trusted_key(FIXTURES / "fixture.pub")
    signer = verify([layer], FIXTURE_DIGEST, [trusted])
    assert (signer.name, signer.fingerprint) == ("fixture", trusted.fingerprint)
    assert simple_signing_payload("registry.example/tools/kit", FIXTURE_DIGEST) == payload
    assert signed_digest(payload) == FIXTURE_DIGEST

    tampered = SignatureLayer(payload=payload.replace(b"tools/kit", b"tools/kid"), signature=layer.signature)
    with pytest.raises(SignatureError, match="found a signature by no trusted key"):
        verify([tampered], FIXTURE_DIGEST, [trusted])
    with pytest.raises(SignatureError, match=f"for another artifact, {FIXTURE_DIGEST}"):
        verify([layer], "sha256:" + "0" * 64, [trusted])
    with pytest.raises(SignatureError, match="is not signed"):
        verify([], FIXTURE_DIGEST, [trusted])
    with pytest.raises(SignatureError, match="not base64"):
        verify([SignatureLayer(payload=payload, signature="%%%")], FIXTURE_DIGEST, [trusted])


def test_a_trusted_signature_over_a_payload_that_is_not_cosigns_is_refused() -> None:
    private_pem, public_pem = generate_key_pair()
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    trusted = TrustedKey("k", fingerprint(key.public_key()), key.public_key())
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    good = simple_signing_payload("r/kit", FIXTURE_DIGEST)
    other_type = good.replace(b"cosign container image signature", b"atomic container signature")
    for payload, complaint in (
        (other_type, "not 'cosign container image signature'"),
        (b"[1, 2]", "not a cosign simple-signing document"),
        (b"\xff", "not a cosign simple-signing document"),
    ):
        with pytest.raises(SignatureError, match=complaint):
            verify([SignatureLayer(payload=payload, signature=sign(key, payload))], FIXTURE_DIGEST, [trusted])
    # Of several signatures one good one is enough, whatever comes before it.
    layers = [
        SignatureLayer(payload=good, signature="%%%"),
        SignatureLayer(payload=good, signature=sign(ec.generate_private_key(ec.SECP256R1()), good)),
        SignatureLayer(payload=good, signature=sign(key, good)),
    ]
    assert verify(layers, FIXTURE_DIGEST, [trusted]).name == "k"


def test_keys_that_are_not_p256_public_keys_are_refused_clearly(tmp_path: Path) -> None:
    assert signature_tag(FIXTURE_DIGEST) == f"sha256-{FIXTURE_DIGEST[7:]}.sig"
    with pytest.raises(SignatureError, match=r"missing\.pub: No such file"):
        load_trusted_key(tmp_path / "missing.pub")
    junk = tmp_path / "junk.pub"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SignatureError, match=r"junk\.pub: not a PEM public key"):
        load_trusted_key(junk)
    with pytest.raises(SignatureError, match=r"fixture\.pub: not an unencrypted PEM private key"):
        load_private_key(FIXTURES / "fixture.pub")
    toml = tmp_path / "toolbus.toml"
    toml.write_text("[registry]\nrequire_signatures = true\n")
    with pytest.raises(ConfigError, match="require_signatures: needs at least one key in 'trusted_keys'"):
        load_settings(toml)
    toml.write_text('[registry]\nrequire_signatures = true\ntrusted_keys = ["keys/release.pub"]\n')
    assert load_settings(toml).registry.trusted_keys == [tmp_path / "keys" / "release.pub"]


# ---------------------------------------------------------------------------------------------
# Through the CLI, the registry and docker-registry, with require_signatures on


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """``release.key``/``release.pub`` (trusted) and ``intruder.key``/``intruder.pub`` (not), made by the CLI."""
    for name in ("release", "intruder"):
        done = toolbus("keys", "generate", name, "--dir", str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert "fingerprint sha256:" in done.stdout
    assert (tmp_path / "release.key").stat().st_mode & 0o777 == 0o600
    again = toolbus("keys", "generate", "release", "--dir", str(tmp_path))
    assert again.returncode == 1 and "exists; not overwriting" in again.stderr
    return tmp_path


@pytest.fixture
def registry_settings(keys: Path) -> RegistrySettings:
    return RegistrySettings(require_signatures=True, trusted_keys=[keys / "release.pub"])


async def refused(deployment: Deployment, oci: str, name: str) -> str:
    """Publish ``oci`` over raw NATS (no CLI in the way); return the refusal, checking nothing was kept."""
    request = PublishRequest(name=name, version="1.0.0", oci=oci)
    with pytest.raises(RegistryRefused) as caught:
        await request_release(deployment.nc, deployment.subjects.registry_release("publish"), encode(request))
    assert await deployment.store.version(name, "1.0.0") is None
    return str(caught.value)


async def test_signed_publish_verified_pull_and_every_refusal(
    deployment: Deployment,
    nats_server: EmbeddedNatsServer,
    oci_registry: OciTestRegistry,
    keys: Path,
    nc: NatsClient,
    subjects: Subjects,
    tmp_path: Path,
) -> None:
    await deployment.start_worker()
    config = nats_settings(tmp_path, nats_server.url, deployment.subjects.prefix)
    release = load_trusted_key(keys / "release.pub")
    published = await nc.subscribe(subjects.event("published"))

    # Signed publish: the CLI signs and pushes the signature; the registry pulls and verifies it.
    signed = answer_component(7)
    manifest_digest = oci_registry.push("tools/signed:1.0", signed)
    done = await asyncio.to_thread(
        toolbus, "publish", oci_registry.oci("tools/signed:1.0"), "--sign", str(keys / "release.key"),
        "--name", "signed", "--version", "1.0.0", "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"release ({release.fingerprint})" in done.stdout
    # The signature sits beside the image exactly as cosign lays it out, and checks without us.
    sig_manifest = json.loads(_get(oci_registry, f"tools/signed/manifests/{signature_tag(manifest_digest)}"))
    [layer] = sig_manifest["layers"]
    assert layer["mediaType"] == SIMPLE_SIGNING
    payload = _get(oci_registry, f"tools/signed/blobs/{layer['digest']}")
    assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == manifest_digest
    raw = base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION])
    release.key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))

    # Verified pull of the same signed artifact, without --sign this time; and the signer is shown.
    done = await asyncio.to_thread(
        toolbus, "publish", oci_registry.oci("tools/signed:1.0"), "--name", "signed", "--version", "1.0.1",
        "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(toolbus, "versions", "signed", "--json", "--config", str(config))
    versions = json.loads(done.stdout)["versions"]
    assert [(v["version"], v["signer"], v["signerKey"]) for v in versions] == [
        ("1.0.0", "release", release.fingerprint),
        ("1.0.1", "release", release.fingerprint),
    ]
    record = await deployment.store.version("signed", "1.0.0")
    assert record is not None and (record.signer, record.signer_key) == ("release", release.fingerprint)
    events = [decode((await published.next_msg(timeout=10)).data, RegistryEvent) for _ in range(2)]
    assert [(e.version, e.signer, e.signer_key) for e in events] == [
        ("1.0.0", "release", release.fingerprint),
        ("1.0.1", "release", release.fingerprint),
    ]
    await published.unsubscribe()
    kept = await nc.jetstream().get_last_msg(subjects.audit_stream, subjects.event("published"))
    assert decode(kept.data or b"", RegistryEvent).signer_key == release.fingerprint  # the audit stream has it

    # A second key signing the same image adds a layer beside the first (cosign's way); signing
    # again with a key replaces that key's own layer. The trusted one still verifies.
    for path in ("intruder.key", "release.key", "intruder.key"):
        push_signature(
            oci_registry.address, "tools/signed", manifest_digest, load_private_key(keys / path),
            insecure=True, scratch=tmp_path,
        )  # fmt: skip
    both = json.loads(_get(oci_registry, f"tools/signed/manifests/{signature_tag(manifest_digest)}"))["layers"]
    assert len(both) == 2 and {layer["digest"] for layer in both} == {layer["digest"]}
    done = await asyncio.to_thread(
        toolbus, "publish", oci_registry.oci("tools/signed:1.0"), "--name", "signed", "--version", "1.0.2",
        "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    # Unsigned: refused, and the artifact was never stored.
    unsigned = answer_component(8)
    oci_registry.push("tools/unsigned:1.0", unsigned)
    message = await refused(deployment, oci_registry.oci("tools/unsigned:1.0"), "unsigned")
    assert "is not signed (no sha256-" in message
    assert not await deployment.store.has_artifact(artifact_digest(unsigned))

    # Signed by a key the registry does not trust: the CLI signs fine, the registry refuses.
    intruded = answer_component(9)
    oci_registry.push("tools/intruded:1.0", intruded)
    done = await asyncio.to_thread(
        toolbus, "publish", oci_registry.oci("tools/intruded:1.0"), "--sign", str(keys / "intruder.key"),
        "--name", "intruded", "--version", "1.0.0", "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 1
    assert f"has no valid signature by a trusted key (release ({release.fingerprint}))" in done.stderr
    assert "found a signature by no trusted key" in done.stderr
    assert await deployment.store.version("intruded", "1.0.0") is None
    assert not await deployment.store.has_artifact(artifact_digest(intruded))

    # Tampered, two ways. (1) A good signature copied beside another image: it names another digest.
    copied = answer_component(10)
    copied_digest = oci_registry.push("tools/copied:1.0", copied)
    for digest in (layer["digest"], sig_manifest["config"]["digest"]):
        _copy_blob(oci_registry, digest, "tools/signed", "tools/copied")
    _put_manifest(oci_registry, "tools/copied", signature_tag(copied_digest), sig_manifest)
    message = await refused(deployment, oci_registry.oci("tools/copied:1.0"), "copied")
    assert f"a signature by release ({release.fingerprint}) for another artifact, {manifest_digest}" in message
    assert not await deployment.store.has_artifact(artifact_digest(copied))
    # (2) Signed honestly, then the component's bytes changed in the registry's storage.
    tampered = with_custom_section(answer_component(11), b"tamper me")
    tampered_digest = oci_registry.push("tools/tampered:1.0", tampered)
    push_signature(
        oci_registry.address, "tools/tampered", tampered_digest, load_private_key(keys / "release.key"),
        insecure=True, scratch=tmp_path,
    )  # fmt: skip
    blob = oci_registry.blob_path(compute_digest(tampered))
    blob.write_bytes(tampered.replace(b"tamper me", b"tampered!"))
    message = await refused(deployment, oci_registry.oci("tools/tampered:1.0"), "tampered")
    assert f"does not match its digest: expected {compute_digest(tampered)}" in message
    assert not await deployment.store.has_artifact(artifact_digest(tampered))

    # Raw NATS naming no artifact, or something that is not an oci:// reference, is refused too.
    for oci in ("https://example.com/kit", "oci://"):
        assert "oci" in await refused(deployment, oci, "odd")

    # A plain file cannot be signed this way, and is refused under require_signatures.
    wasm = tmp_path / "plain.wasm"
    wasm.write_bytes(answer_component(12))
    done = await asyncio.to_thread(
        toolbus, "publish", str(wasm), "--name", "plain", "--version", "1.0.0", "--config", str(config)
    )
    assert done.returncode == 1 and "requires signatures" in done.stderr
    assert await deployment.store.version("plain", "1.0.0") is None
    done = await asyncio.to_thread(
        toolbus, "publish", str(wasm), "--sign", str(keys / "release.key"), "--name", "plain", "--version", "1.0.0",
        "--config", str(config),
    )  # fmt: skip
    assert done.returncode == 1 and "--sign: signs an oci:// artifact" in done.stderr


def _get(registry: OciTestRegistry, path: str) -> bytes:
    request = urllib.request.Request(f"http://{registry.address}/v2/{path}", headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def _put_manifest(registry: OciTestRegistry, repository: str, tag: str, manifest: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://{registry.address}/v2/{repository}/manifests/{tag}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": OCI_MANIFEST},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def _copy_blob(registry: OciTestRegistry, digest: str, source: str, target: str) -> None:
    """Cross-repository mount: the registry links the blob into ``target`` (as a copier would push it)."""
    request = urllib.request.Request(
        f"http://{registry.address}/v2/{target}/blobs/uploads/?mount={digest}&from={source}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


async def test_a_registry_with_an_unusable_trusted_key_stops_at_start_saying_which(
    nats_server: EmbeddedNatsServer, subjects: Subjects, tmp_path: Path
) -> None:
    config = nats_settings(tmp_path, nats_server.url, subjects.prefix)
    (tmp_path / "junk.pub").write_text("not a key\n")
    config.write_text(config.read_text() + '[registry]\nrequire_signatures = true\ntrusted_keys = ["junk.pub"]\n')
    done = await asyncio.to_thread(toolbus, "registry", "--config", str(config))
    assert done.returncode == 2
    assert f"toolbus: registry: {tmp_path / 'junk.pub'}: not a PEM public key" in done.stderr
    assert "Traceback" not in done.stderr


async def test_an_alias_cannot_be_pointed_at_an_unsigned_version_under_require_signatures(
    deployment: Deployment, keys: Path
) -> None:
    # Versions recorded before require_signatures was turned on (or signed by a key no longer
    # trusted) stay readable, but a rollback — a raw NATS verb or the console's "make latest" —
    # must not make one what workers serve: that would publish unsigned code by another door.
    for version, signer_key in (("1.0.0", ""), ("1.1.0", "sha256:0123456789abcdef")):
        record = PackageVersion(name="old", version=version, digest=artifact_digest(version.encode()), tools=[],
                                signer="retired-key" if signer_key else "", signer_key=signer_key)  # fmt: skip
        await deployment.store.create_version(record)
    for version in ("1.0.0", "1.1.0"):
        with pytest.raises(RegistryRefused) as caught:
            await deployment.release("rollback", "old", version)
        assert "require_signatures" in str(caught.value) and version in str(caught.value)
        assert await deployment.store.alias("old", "latest") is None
    # Retiring the signed latest does not move latest onto an unsigned version: it goes away.
    trusted = load_trusted_key(keys / "release.pub")
    signed = PackageVersion(name="old", version="2.0.0", digest=artifact_digest(b"2"), tools=[],
                            signer=trusted.name, signer_key=trusted.fingerprint)  # fmt: skip
    await deployment.store.create_version(signed)
    await deployment.release("rollback", "old", "2.0.0")
    assert await deployment.store.alias("old", "latest") == "2.0.0"
    await deployment.release("retire", "old", "2.0.0")
    assert await deployment.store.alias("old", "latest") is None
    # Taking things away stays possible: deprecate and retire need no signature.
    await deployment.release("deprecate", "old", "1.0.0", reason="unsigned")
    await deployment.release("retire", "old", "1.0.0")
