"""Pulling a Wasm component from an OCI registry: a real docker-registry on loopback, pushed to with oras.

Where a real registry cannot be made to misbehave (a bearer-token challenge, a redirect to another
origin, a Basic challenge), a small stdlib HTTP server on loopback plays the registry.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bus.embedded import free_port
from registry.errors import RegistryError
from registry.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    WASM_CONFIG,
    WASM_LAYER,
    OciError,
    OciReference,
    compute_digest,
    parse_reference,
    pull_component,
    verify_digest,
)
from tests.conftest import TESTKIT_WAT
from tests.registry.conftest import OciTestRegistry
from workers.sandbox.compile_cache import read_wasm

SHA = "sha256:" + "ab" * 32


def with_custom_section(wasm: bytes, payload: bytes) -> bytes:
    """``wasm`` plus a custom section, so a test has a component no other test pushed (blobs are shared)."""
    name = b"toolbus-test"
    body = bytes([len(name)]) + name + payload
    assert len(body) < 128  # one-byte LEB128 size
    return wasm + b"\x00" + bytes([len(body)]) + body


@pytest.fixture(scope="session")
def kit_wasm() -> bytes:
    """The testkit component as Wasm bytes (a real component: ``\\0asm`` with the component version)."""
    return read_wasm(TESTKIT_WAT)


# ---------------------------------------------------------------------------------------------
# parse_reference


@pytest.mark.parametrize(
    ("text", "host", "port", "repository", "tag", "digest"),
    [
        ("oci://127.0.0.1:5000/tools/kit:1.0", "127.0.0.1", 5000, "tools/kit", "1.0", None),
        ("oci://ghcr.io/org/kit", "ghcr.io", None, "org/kit", "latest", None),
        (f"oci://localhost/kit@{SHA}", "localhost", None, "kit", None, SHA),
        (f"oci://[::1]:5000/a/b-c_d.e:v1.2-rc_3@{SHA}", "::1", 5000, "a/b-c_d.e", "v1.2-rc_3", SHA),
    ],
)
def test_parse_reference_reads_every_form(
    text: str, host: str, port: int | None, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert ref == OciReference(host=host, port=port, repository=repository, tag=tag, digest=digest)
    assert ref.reference == (digest or tag)
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("https://ghcr.io/org/kit", "not an oci:// reference"),
        ("oci://ghcr.io", "names no repository"),
        ("oci://ghcr.io/", "names no repository"),
        ("oci://gh_cr.io/kit", "is not a host"),
        ("oci://ghcr.io:99999/kit", "port 99999 is out of range"),
        ("oci://[zz::1]/kit", "is not a host"),
        ("oci://[1::2::3]/kit", "is not an IPv6 address"),
        ("oci://ghcr.io/Org/Kit", "is not a repository name"),
        ("oci://ghcr.io/kit:", "is not a tag"),
        ("oci://ghcr.io/kit:-v1", "is not a tag"),
        ("oci://ghcr.io/kit@sha256:abc", "is not a digest"),
        ("oci://ghcr.io/kit@md5:" + "ab" * 16, "is not a digest"),
    ],
)
def test_parse_reference_refuses_what_is_not_a_reference(text: str, complaint: str) -> None:
    with pytest.raises(OciError) as caught:
        parse_reference(text)
    assert caught.value.kind == "reference"
    assert complaint in str(caught.value)
    assert str(caught.value).startswith(f"{text}: ")
    assert isinstance(caught.value, RegistryError)


def test_loopback_hosts_are_known() -> None:
    for host in ("localhost", "127.0.0.1", "127.3.2.1", "[::1]"):
        assert parse_reference(f"oci://{host}/kit").is_loopback, host
    for host in ("ghcr.io", "10.0.0.1", "[fe80::1]", "localhost.example"):
        assert not parse_reference(f"oci://{host}/kit").is_loopback, host


# ---------------------------------------------------------------------------------------------
# Digest verification (unit: a real registry serves what it stored; see also the on-disk tamper test)


def test_verify_digest_accepts_the_bytes_and_refuses_others(kit_wasm: bytes) -> None:
    digest = compute_digest(kit_wasm)
    verify_digest(kit_wasm, digest, reference="oci://r/kit", what="wasm layer")
    tampered = kit_wasm[:-1] + bytes([kit_wasm[-1] ^ 1])
    with pytest.raises(OciError) as caught:
        verify_digest(tampered, digest, reference="oci://r/kit", what="wasm layer")
    assert caught.value.kind == "digest-mismatch"
    assert f"expected {digest}, got {compute_digest(tampered)}" in str(caught.value)
    verify_digest(kit_wasm, compute_digest(kit_wasm, "sha512"), reference="oci://r/kit", what="wasm layer")
    with pytest.raises(OciError, match="not sha256 or sha512"):
        verify_digest(kit_wasm, "md5:00", reference="oci://r/kit", what="wasm layer")


# ---------------------------------------------------------------------------------------------
# Against a real registry (Debian's docker-registry), pushed to with oras


def test_pull_returns_the_pushed_component(oci_registry: OciTestRegistry, kit_wasm: bytes) -> None:
    annotations = {"org.opencontainers.image.title": "kit", "org.opencontainers.image.version": "1.0"}
    manifest_digest = oci_registry.push("tools/kit:1.0", kit_wasm, annotations=annotations)
    pulled = pull_component(parse_reference(oci_registry.oci("tools/kit:1.0")), timeout_s=10)
    assert pulled.wasm == kit_wasm
    assert pulled.layer_digest == compute_digest(kit_wasm)
    assert pulled.manifest_digest == manifest_digest
    assert pulled.config_media_type == WASM_CONFIG
    assert pulled.annotations == annotations
    assert pulled.layer_annotations == {"org.opencontainers.image.title": "component.wasm"}
    assert kit_wasm[:8] == b"\0asm\x0d\x00\x01\x00"  # what was pushed is a component, not a core module

    by_digest = pull_component(parse_reference(oci_registry.oci(f"tools/kit@{manifest_digest}")))
    assert by_digest.wasm == kit_wasm
    assert by_digest.manifest_digest == manifest_digest


def test_a_missing_tag_or_repository_is_not_found(oci_registry: OciTestRegistry, kit_wasm: bytes) -> None:
    oci_registry.push("tools/present:1.0", kit_wasm)
    for target in ("tools/present:2.0", "tools/absent:1.0"):  # docker-registry says MANIFEST_UNKNOWN to both
        ref = parse_reference(oci_registry.oci(target))
        with pytest.raises(OciError) as caught:
            pull_component(ref)
        assert caught.value.kind == "not-found"
        assert str(caught.value).startswith(f"{ref}: manifest {ref.tag} not found (MANIFEST_UNKNOWN: manifest unknown)")


def test_a_manifest_without_a_wasm_layer_is_refused(oci_registry: OciTestRegistry) -> None:
    oci_registry.push("tools/notes:1.0", b"just text\n", layer_media_type="text/plain")
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(oci_registry.oci("tools/notes:1.0")))
    assert caught.value.kind == "no-wasm-layer"
    assert "has no application/wasm layer (its layers: text/plain)" in str(caught.value)


def test_an_application_wasm_layer_that_is_not_wasm_is_refused(oci_registry: OciTestRegistry) -> None:
    oci_registry.push("tools/liar:1.0", b"#!/bin/sh\necho hi\n")
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(oci_registry.oci("tools/liar:1.0")))
    assert caught.value.kind == "not-wasm"


def test_an_image_index_is_refused_with_a_hint(oci_registry: OciTestRegistry, kit_wasm: bytes) -> None:
    manifest_digest = oci_registry.push("tools/multi:single", kit_wasm)
    size = len(urllib.request.urlopen(_manifest_request(oci_registry, "tools/multi", manifest_digest)).read())
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": size}],
    }
    put = urllib.request.Request(
        f"http://{oci_registry.address}/v2/tools/multi/manifests/index",
        data=json.dumps(index).encode(),
        headers={"Content-Type": OCI_INDEX},
        method="PUT",
    )
    assert urllib.request.urlopen(put).status == 201
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(oci_registry.oci("tools/multi:index")))
    assert caught.value.kind == "unsupported-manifest"
    assert "image index" in str(caught.value)


def _manifest_request(registry: OciTestRegistry, repository: str, reference: str) -> urllib.request.Request:
    return urllib.request.Request(
        f"http://{registry.address}/v2/{repository}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
    )


def test_a_component_over_max_bytes_is_refused_before_download(oci_registry: OciTestRegistry, kit_wasm: bytes) -> None:
    oci_registry.push("tools/big:1.0", kit_wasm)
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(oci_registry.oci("tools/big:1.0")), max_bytes=100)
    assert caught.value.kind == "too-large"
    assert f"is {len(kit_wasm)} bytes, over the limit of 100" in str(caught.value)


def test_a_blob_tampered_with_in_storage_is_refused(oci_registry: OciTestRegistry, kit_wasm: bytes) -> None:
    wasm = with_custom_section(kit_wasm, b"tamper me")
    oci_registry.push("tools/tampered:1.0", wasm)
    blob = oci_registry.blob_path(compute_digest(wasm))
    assert blob.read_bytes() == wasm
    blob.write_bytes(wasm.replace(b"tamper me", b"tampered!"))  # same size, other bytes
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(oci_registry.oci("tools/tampered:1.0")))
    assert caught.value.kind == "digest-mismatch"
    assert f"expected {compute_digest(wasm)}" in str(caught.value)


def test_https_to_a_plain_http_registry_fails_saying_tls(oci_registry: OciTestRegistry, kit_wasm: bytes) -> None:
    oci_registry.push("tools/tls:1.0", kit_wasm)
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(oci_registry.oci("tools/tls:1.0")), insecure=False, timeout_s=5)
    assert caught.value.kind == "connection"
    assert "TLS" in str(caught.value)
    assert "insecure=True" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# No registry at all


def test_connection_refused_is_said() -> None:
    port = free_port()
    ref = parse_reference(f"oci://127.0.0.1:{port}/tools/kit:1.0")
    with pytest.raises(OciError) as caught:
        pull_component(ref, timeout_s=5)
    assert caught.value.kind == "connection"
    assert str(caught.value) == f"{ref}: cannot connect to 127.0.0.1:{port}: connection refused"


def test_a_registry_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) and never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        ref = parse_reference(f"oci://127.0.0.1:{listener.getsockname()[1]}/tools/kit:1.0")
        started = time.monotonic()
        with pytest.raises(OciError) as caught:
            pull_component(ref, timeout_s=0.5)
    assert caught.value.kind == "timeout"
    assert "timed out after 0.5 s" in str(caught.value)
    assert time.monotonic() - started < 3


# ---------------------------------------------------------------------------------------------
# A scripted registry for what docker-registry cannot be made to do without a token server


@dataclass
class Script:
    """What the scripted registry serves and what it saw."""

    port: int
    wasm: bytes
    challenge: str = ""
    stored: bytes | None = None
    """What blob storage serves, if not ``wasm`` (the manifest always describes ``wasm``)."""
    token: str = "t0ken"
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Authorization header) of every request."""

    @property
    def manifest(self) -> bytes:
        layer = {"mediaType": WASM_LAYER, "digest": compute_digest(self.wasm), "size": len(self.wasm)}
        config = {"mediaType": WASM_CONFIG, "digest": compute_digest(b"{}"), "size": 2}
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}).encode()


class ScriptedRegistry(BaseHTTPRequestHandler):
    """Bearer challenge on /v2/, a token at /token, blobs redirected to /storage on another origin."""

    script: ClassVar[Script]

    def do_GET(self) -> None:
        script = self.script
        script.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/token?"):
            self.reply(200, json.dumps({"token": script.token}).encode(), "application/json")
        elif self.path.startswith("/storage/"):
            self.reply(200, script.wasm if script.stored is None else script.stored, "application/octet-stream")
        elif self.headers.get("Authorization") != f"Bearer {script.token}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", script.challenge)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif "/manifests/" in self.path:
            self.reply(200, script.manifest, OCI_MANIFEST)
        elif "/blobs/" in self.path:  # to "localhost", another origin than the 127.0.0.1 we were asked for
            self.send_response(307)
            self.send_header("Location", f"http://localhost:{script.port}/storage/{self.path.rsplit('/', 1)[1]}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.reply(404, b"{}", "application/json")

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def scripted(kit_wasm: bytes) -> Iterator[Script]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedRegistry)
    script = Script(port=server.server_address[1], wasm=kit_wasm)
    script.challenge = (
        f'Bearer realm="http://127.0.0.1:{script.port}/token",service="scripted",scope="repository:tools/kit:pull"'
    )
    ScriptedRegistry.script = script
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield script
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_bearer_challenge_is_answered_and_the_token_stays_home(scripted: Script, kit_wasm: bytes) -> None:
    pulled = pull_component(parse_reference(f"oci://127.0.0.1:{scripted.port}/tools/kit:1.0"), timeout_s=10)
    assert pulled.wasm == kit_wasm
    assert pulled.manifest_digest == compute_digest(scripted.manifest)
    digest = compute_digest(kit_wasm)
    assert scripted.seen == [
        ("/v2/tools/kit/manifests/1.0", None),
        ("/token?scope=repository%3Atools%2Fkit%3Apull&service=scripted", None),
        ("/v2/tools/kit/manifests/1.0", "Bearer t0ken"),
        (f"/v2/tools/kit/blobs/{digest}", "Bearer t0ken"),
        (f"/storage/{digest}", None),  # the redirect left our origin: no token there
    ]


def test_a_redirected_blob_that_does_not_match_is_refused(scripted: Script, kit_wasm: bytes) -> None:
    scripted.stored = kit_wasm[:-1] + bytes([kit_wasm[-1] ^ 1])
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(f"oci://127.0.0.1:{scripted.port}/tools/kit:1.0"), timeout_s=10)
    assert caught.value.kind == "digest-mismatch"
    scripted.stored = kit_wasm + b"more"
    with pytest.raises(OciError, match="served more than the"):
        pull_component(parse_reference(f"oci://127.0.0.1:{scripted.port}/tools/kit:1.0"), timeout_s=10)


def test_a_basic_challenge_is_refused_clearly(scripted: Script) -> None:
    scripted.challenge = 'Basic realm="registry"'
    with pytest.raises(OciError) as caught:
        pull_component(parse_reference(f"oci://127.0.0.1:{scripted.port}/tools/kit:1.0"), timeout_s=10)
    assert caught.value.kind == "auth"
    assert "asks for Basic credentials; only anonymous pulls are supported" in str(caught.value)
