"""A worker believes the principal of a call only when a gateway signed it for that call.

Real NATS, a real worker serving the testkit; the calls are plain NATS requests, so the test
plays both a gateway (holding the key) and a client forging headers (not holding it).
"""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects
from schemas.codec import encode
from tests.workers.conftest import SignedWorker

MIB = 1024 * 1024


async def test_only_a_signed_principal_reaches_the_workers_observers(
    nc: NatsClient, subjects: Subjects, signed_worker: SignedWorker
) -> None:
    signer, seen = signed_worker.signer, signed_worker.seen
    subject, body = subjects.call("kit_add"), encode({"a": 1, "b": 2})
    signed = {Header.REQUEST_ID: "req-signed"}
    signer.stamp(signed, "alice", subject=subject, body=body, valid_for_s=10)
    forged = {Header.REQUEST_ID: "req-forged"}
    PrincipalSigner("not-the-deployment-key").stamp(forged, "admin", subject=subject, body=body, valid_for_s=10)
    moved = {Header.REQUEST_ID: "req-moved"}  # alice's signature, lifted onto another request
    moved.update({k: v for k, v in signed.items() if k != Header.REQUEST_ID})
    bare = {Header.REQUEST_ID: "req-bare", Header.PRINCIPAL: "root"}
    for headers in (signed, forged, moved, bare):
        reply = await nc.request(subject, body, timeout=10, headers=headers)
        assert reply.headers is None or Header.ERROR not in reply.headers  # every call is served
    principals = {record.request_id: record.principal for record in seen}
    assert principals == {"req-signed": "alice", "req-forged": None, "req-moved": None, "req-bare": None}


async def test_a_signature_covers_the_arguments_of_a_claim_check_not_its_empty_body(
    nc: NatsClient, subjects: Subjects, signed_worker: SignedWorker
) -> None:
    signer, seen = signed_worker.signer, signed_worker.seen
    payloads = Payloads(nc, subjects)
    subject = subjects.call("kit_greet")
    big, other = encode({"name": "a" * (2 * MIB)}), encode({"name": "b" * (2 * MIB)})
    # The gateway's way (gateway.calls): signed over the real arguments, then checked in.
    signed = {Header.REQUEST_ID: "req-big"}
    signer.stamp(signed, "alice", subject=subject, body=big, valid_for_s=10)
    body, headers = await payloads.offload(big, dict(signed))
    # An attacker who saw that call keeps alice's signature and points it at other arguments.
    swapped_body, swapped = await payloads.offload(other, {**signed, Header.REQUEST_ID: "req-swapped"})
    # ... or signs the empty body a claim check travels with.
    empty = {Header.REQUEST_ID: "req-empty"}
    signer.stamp(empty, "alice", subject=subject, body=b"", valid_for_s=10)
    empty_body, empty_headers = await payloads.offload(other, empty)
    for request_body, request_headers in ((body, headers), (swapped_body, swapped), (empty_body, empty_headers)):
        await nc.request(subject, request_body, timeout=10, headers=request_headers)
    principals = {record.request_id: record.principal for record in seen}
    assert principals == {"req-big": "alice", "req-swapped": None, "req-empty": None}
