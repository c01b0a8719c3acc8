"""Fair share of a worker's guest threads: one principal's slow calls cannot take every slot.

A real worker (real wasmtime, the testkit's ``kit_danger_spin`` burning CPU until its deadline)
takes calls signed for principals as a gateway signs them. Principal ``hog`` fires a slow call
at every slot; principal ``victim``'s ``kit_add`` must still start at once. The figure (the
victim's latency with and without the share) is printed for docs/security.md.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects
from schemas.codec import decode, encode
from schemas.config import WorkerSettings
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorReply
from tests.conftest import deadline_in, eventually
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService

SIGNER = PrincipalSigner("fair-share-test-key-fair-share")
CONCURRENCY = 2
SLOW_S = 2.0
"""How long each of the hog's calls holds its guest thread (the spin runs to its deadline)."""


async def signed_call(
    nc: NatsClient, subjects: Subjects, tool: str, body: bytes, principal: str, **headers: str
) -> Msg:
    subject = subjects.call(tool)
    all_headers = {Header.REQUEST_ID: f"{principal}-{time.monotonic_ns()}", **headers}
    SIGNER.stamp(all_headers, principal, subject=subject, body=body, valid_for_s=30)
    return await nc.request(subject, body, timeout=SLOW_S * 4, headers=all_headers)


async def victim_delay(nc: NatsClient, subjects: Subjects, kit: LoadedComponent, share: int | None) -> float:
    """Seconds the victim's ``kit_add`` takes while the hog has sent a slow call for every slot
    (and one more); ``share`` is the worker's ``calls_per_principal``."""
    settings = WorkerSettings(concurrency=CONCURRENCY, calls_per_principal=share)
    service = WorkerService(nc, subjects, settings, [kit], principal_signer=SIGNER)
    await service.start()
    try:
        spin = {Header.DEADLINE_MS: deadline_in(SLOW_S)[Header.DEADLINE_MS]}
        hog = [
            asyncio.create_task(signed_call(nc, subjects, "kit_danger_spin", b"{}", "hog", **spin))
            for _ in range(CONCURRENCY + 1)
        ]
        admitted = CONCURRENCY + 1 if share is None else share
        await eventually(lambda: service.accepted == admitted, what="the hog's calls were not admitted")
        started = time.monotonic()
        reply = await signed_call(nc, subjects, "kit_add", encode({"a": 2, "b": 3}), "victim")
        delay = time.monotonic() - started
        assert decode(reply.data, CallToolResult).structured_content == 5
        replies = await asyncio.gather(*hog)
        refused = [decode(r.data, ErrorReply).error for r in replies if r.headers and Header.ERROR in r.headers]
        assert len(refused) == CONCURRENCY + 1 - admitted
        for error in refused:
            assert (error.code, error.retryable) == (ErrorCode.OVERLOADED, True)
            assert "'hog' has its share" in error.message
        return delay
    finally:
        await service.stop(grace_s=SLOW_S * 2)


async def test_a_principal_at_its_share_cannot_delay_another(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    shared = await victim_delay(nc, subjects, kit, share=CONCURRENCY - 1)
    unshared = await victim_delay(nc, subjects, kit, share=None)
    print(
        f"\nvictim's kit_add with the hog in every slot: {shared * 1000:.1f} ms with calls_per_principal="
        f"{CONCURRENCY - 1}, {unshared * 1000:.0f} ms without (slow calls {SLOW_S} s, concurrency {CONCURRENCY})"
    )
    # With the share a thread is always free: the victim waits for no slow call at all. Without,
    # it waits for one to end (the control that shows the hog really filled every slot).
    assert shared < SLOW_S / 4
    assert unshared > SLOW_S / 2


async def test_unsigned_callers_share_one_allowance(nc: NatsClient, subjects: Subjects, kit: LoadedComponent) -> None:
    """A principal header without a valid signature is no way around the share."""
    settings = WorkerSettings(concurrency=CONCURRENCY, calls_per_principal=1)
    service = WorkerService(nc, subjects, settings, [kit], principal_signer=SIGNER)
    await service.start()
    try:
        first = asyncio.create_task(
            nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=10, headers=deadline_in(SLOW_S / 2))
        )
        await eventually(lambda: service.accepted == 1, what="the first unsigned call was not admitted")
        forged = {**deadline_in(SLOW_S / 2), Header.PRINCIPAL: "someone-else", Header.REQUEST_ID: "r"}
        reply = await nc.request(subjects.call("kit_danger_spin"), b"{}", timeout=10, headers=forged)
        error = decode(reply.data, ErrorReply).error
        assert error.code == ErrorCode.OVERLOADED and "unsigned callers" in error.message
        await first
    finally:
        await service.stop(grace_s=SLOW_S)


async def test_unsigned_callers_cannot_starve_a_signed_principal(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    """A raw NATS caller (any holder of call-publishing credentials) sends a slow call for every
    slot, each under another forged principal: together they are the one unsigned caller, held to
    its share, and a principal the gateway signed still starts at once."""
    settings = WorkerSettings(concurrency=CONCURRENCY, calls_per_principal=CONCURRENCY - 1)
    service = WorkerService(nc, subjects, settings, [kit], principal_signer=SIGNER)
    await service.start()
    try:
        flood = [
            asyncio.create_task(
                nc.request(
                    subjects.call("kit_danger_spin"),
                    b"{}",
                    timeout=SLOW_S * 4,
                    headers={**deadline_in(SLOW_S), Header.PRINCIPAL: f"forged-{i}", Header.REQUEST_ID: f"f{i}"},
                )
            )
            for i in range(CONCURRENCY + 1)
        ]
        await eventually(lambda: service.accepted == CONCURRENCY - 1, what="the unsigned flood was not admitted")
        started = time.monotonic()
        reply = await signed_call(nc, subjects, "kit_add", encode({"a": 2, "b": 3}), "victim")
        delay = time.monotonic() - started
        assert decode(reply.data, CallToolResult).structured_content == 5
        assert delay < SLOW_S / 4, delay
        replies = await asyncio.gather(*flood)
        refused = [decode(r.data, ErrorReply).error for r in replies if r.headers and Header.ERROR in r.headers]
        assert len(refused) == 2 and all("unsigned callers" in e.message for e in refused), refused
    finally:
        await service.stop(grace_s=SLOW_S * 2)
