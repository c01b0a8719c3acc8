"""Attack a worker with principal signatures whose expiry ``int()`` cannot read.

Real NATS, a real worker serving the testkit. ``PrincipalSigner.verified`` runs on each call
before the worker's own error handler: an expiry of '²' (``isdigit`` passes it, ``int`` refuses
it) or of 5,000 digits raised there, and the call went unanswered until its caller's deadline.
Each such call must be served as unsigned (no principal), and the worker keep serving.
"""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects
from schemas.codec import decode_json, encode
from schemas.config import WorkerSettings
from workers.answers import FinishedCall
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService

KEY = "worker-test-principal-key"


async def test_a_call_with_an_unreadable_expiry_is_served_unsigned(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    signer = PrincipalSigner(KEY)
    service = WorkerService(nc, subjects, WorkerSettings(concurrency=1), [kit], principal_signer=signer)
    seen: list[FinishedCall] = []
    service.observers.append(seen.append)
    await service.start()
    try:
        subject, body = subjects.call("kit_add"), encode({"a": 1, "b": 2})
        for i, expiry in enumerate(("²", "9" * 5000, "١٢٣")):
            headers = {Header.REQUEST_ID: f"req-{i}"}
            signer.stamp(headers, "alice", subject=subject, body=body, valid_for_s=10)
            mac = headers[Header.PRINCIPAL_SIGNATURE].partition(".")[2]
            headers[Header.PRINCIPAL_SIGNATURE] = f"{expiry}.{mac}"
            reply = await nc.request(subject, body, timeout=10, headers=headers)
            assert reply.headers is None or Header.ERROR not in reply.headers
            assert decode_json(reply.data)["structuredContent"] == 3
    finally:
        await service.stop(grace_s=1)
    assert {record.request_id: record.principal for record in seen} == {"req-0": None, "req-1": None, "req-2": None}
