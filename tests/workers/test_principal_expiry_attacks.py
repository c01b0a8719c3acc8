"""Attack a worker with principal signatures it must judge without raising, over raw NATS.

Real NATS, a real worker serving the testkit. ``PrincipalSigner.verified`` runs on each call
before the worker's own error handler, so whatever it raised left the call unanswered until its
caller's deadline: an expiry of '²' (``isdigit`` passes it, ``int`` refuses it) or of 5,000
digits, and a MAC with a non-ASCII character (``hmac.compare_digest`` refuses such str). Each such
call must be served as unsigned (no principal), and the worker keep serving. A signature re-spelled
(a leading zero on its expiry) or lifted onto another principal names nobody either.
"""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from bus.subjects import Header, Subjects
from schemas.codec import decode_json, encode
from tests.workers.conftest import SignedWorker


async def test_a_call_with_an_unreadable_or_respelled_signature_is_served_unsigned(
    nc: NatsClient, subjects: Subjects, signed_worker: SignedWorker
) -> None:
    signer, seen = signed_worker.signer, signed_worker.seen
    subject, body = subjects.call("kit_add"), encode({"a": 1, "b": 2})
    attempts = {
        "bad-expiry-superscript": lambda expiry, mac: f"².{mac}",
        "bad-expiry-5000-digits": lambda expiry, mac: f"{'9' * 5000}.{mac}",
        "bad-expiry-arabic-indic": lambda expiry, mac: f"١٢٣.{mac}",
        "leading-zero": lambda expiry, mac: f"0{expiry}.{mac}",
        "mac-non-ascii": lambda expiry, mac: f"{expiry}.{mac[:-1]}é",
        "mac-all-non-ascii": lambda expiry, mac: f"{expiry}.{'é' * len(mac)}",
        "mac-empty": lambda expiry, mac: f"{expiry}.",
    }
    for request_id, respell in attempts.items():
        headers = {Header.REQUEST_ID: request_id}
        signer.stamp(headers, "alice", subject=subject, body=body, valid_for_s=10)
        expiry, _, mac = headers[Header.PRINCIPAL_SIGNATURE].partition(".")
        headers[Header.PRINCIPAL_SIGNATURE] = respell(expiry, mac)
        reply = await nc.request(subject, body, timeout=10, headers=headers)
        assert reply.headers is None or Header.ERROR not in reply.headers
        assert decode_json(reply.data)["structuredContent"] == 3
    # alice's untouched signature, with another principal's name beside it.
    lifted = {Header.REQUEST_ID: "another-principal"}
    signer.stamp(lifted, "alice", subject=subject, body=body, valid_for_s=10)
    lifted[Header.PRINCIPAL] = "bob"
    await nc.request(subject, body, timeout=10, headers=lifted)
    principals = {record.request_id: record.principal for record in seen}
    assert principals == dict.fromkeys([*attempts, "another-principal"])
