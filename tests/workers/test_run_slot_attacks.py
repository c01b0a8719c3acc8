"""Attacks on the worker's run slots and held-back calls (``WorkerService._run_held_back``).

Accepted calls now wait for a run slot in a queue of the worker's (not each in a thread of its
own), and a guest thread holding a slot runs them one after the other. An attacker tries to get
more than its share with many calls at once, to run more guests than ``concurrency``, to have a
cancelled call run anyway, to starve a guest resumed after its client's answer behind the queue,
or to lose calls queued when the worker stops. Real worker, real wasmtime (the testkit's
``kit_danger_spin`` burns CPU until its deadline), real nats-server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects
from schemas.codec import decode, encode
from schemas.config import ComponentSettings, WorkerSettings
from schemas.errors import ErrorCode
from schemas.wire import CallToolResult, ErrorReply, GuestAnswer
from tests.conftest import deadline_in, eventually
from tests.workers.test_asks import KEY, call, resume, suspension, text
from tests.workers.test_fair_share import SIGNER, signed_call
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.service import WorkerService

SPIN_S = 1.0
"""How long each spinning call holds its slot (to its deadline)."""
REPLY_BOUND_S = 20.0
"""Generous bound for a reply: a call that hangs fails the test instead of blocking the run."""


def spin_headers(seconds: float = SPIN_S, **extra: str) -> dict[str, str]:
    return {Header.DEADLINE_MS: deadline_in(seconds)[Header.DEADLINE_MS], **extra}


def error_of(reply: Msg) -> ErrorReply | None:
    if reply.headers and Header.ERROR in reply.headers:
        return decode(reply.data, ErrorReply)
    return None


async def spin(nc: NatsClient, subjects: Subjects, principal: str = "p", seconds: float = SPIN_S, **extra: str) -> Msg:
    return await signed_call(nc, subjects, "kit_danger_spin", b"{}", principal, **spin_headers(seconds, **extra))


@asynccontextmanager
async def serving(
    nc: NatsClient,
    subjects: Subjects,
    settings: WorkerSettings,
    components: list[LoadedComponent],
    signer: PrincipalSigner = SIGNER,
) -> AsyncIterator[WorkerService]:
    """A started worker serving ``components``, stopped after (its spinning guests given time to end)."""
    service = WorkerService(nc, subjects, settings, components, principal_signer=signer)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace_s=SPIN_S * 2)


async def test_a_principal_firing_many_calls_at_once_gets_only_its_share(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    settings = WorkerSettings(concurrency=2, queue_depth=16, calls_per_principal=1)
    async with serving(nc, subjects, settings, [kit]) as service:
        hog = [asyncio.create_task(spin(nc, subjects, "hog")) for _ in range(12)]
        await eventually(lambda: service.accepted >= 1, what="no hog call admitted")
        reply = await signed_call(nc, subjects, "kit_add", encode({"a": 2, "b": 3}), "victim")
        assert decode(reply.data, CallToolResult).structured_content == 5
        replies = await asyncio.wait_for(asyncio.gather(*hog), REPLY_BOUND_S)
        refused = [e.error for r in replies if (e := error_of(r)) is not None]
        assert len(refused) == 11, [e.message for e in refused]
        assert all(e.code == ErrorCode.OVERLOADED and "'hog' has its share" in e.message for e in refused)


async def test_running_guests_never_exceed_concurrency_however_many_are_held_back(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    settings = WorkerSettings(concurrency=2, queue_depth=8)
    async with serving(nc, subjects, settings, [kit]) as service:
        calls = [asyncio.create_task(spin(nc, subjects, f"p{i}", seconds=SPIN_S * 3)) for i in range(6)]
        await eventually(lambda: service.accepted == 6, what="the calls were not all admitted")
        # Two running (no slot free), four waiting for one: none started beyond the slots.
        await eventually(lambda: len(service._held_back) == 4, what="calls started beyond the run slots")
        assert not service._run_slots.free()
        replies = await asyncio.wait_for(asyncio.gather(*calls), REPLY_BOUND_S)
        # The first two spun to their deadline; the held-back ones ran (or were told their time
        # had passed): each got an answer, none was lost.
        assert len(replies) == 6
        assert service.accepted == 0 and not service._held_back and service._run_slots.free()


async def test_a_held_back_call_cancelled_is_answered_cancelled_without_running(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    settings = WorkerSettings(concurrency=1, queue_depth=4)
    async with serving(nc, subjects, settings, [kit]) as service:
        running = asyncio.create_task(spin(nc, subjects, "a"))
        await eventually(lambda: service.accepted == 1)
        # Held back behind it: a spin of 60 s, which would outlive the request if it ran.
        held = asyncio.create_task(spin(nc, subjects, "b", seconds=60, **{Header.REQUEST_ID: "held-back-victim"}))
        await eventually(lambda: len(service._held_back) == 1, what="the second call was not held back")
        await nc.publish(subjects.cancel("held-back-victim"), b"")
        await nc.flush()
        started = time.monotonic()
        reply = await asyncio.wait_for(held, REPLY_BOUND_S)
        error = error_of(reply)
        assert error is not None and error.error.code == ErrorCode.CANCELLED, reply.data
        assert time.monotonic() - started < 30, "the cancelled call ran its spin"
        await asyncio.wait_for(running, REPLY_BOUND_S)
        await eventually(lambda: service.accepted == 0)


async def test_a_held_back_call_never_runs_past_its_callers_deadline(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    """Its guest budget was taken from the caller's deadline when it was accepted: a call held
    back for a slot spends part of it waiting, and its caller has given up by the deadline. Run
    with the whole budget it would spin that long again, for nobody (each queued call doubling
    the CPU an attacker's deadline buys). What is left is all it gets: here, nothing."""
    settings = WorkerSettings(concurrency=1, queue_depth=4)
    async with serving(nc, subjects, settings, [kit]) as service:
        running = asyncio.create_task(spin(nc, subjects, "a", seconds=SPIN_S * 2))
        await eventually(lambda: service.accepted == 1)
        held = asyncio.create_task(spin(nc, subjects, "b", seconds=SPIN_S / 2))
        await eventually(lambda: len(service._held_back) == 1, what="the second call was not held back")
        reply = await asyncio.wait_for(held, REPLY_BOUND_S)
        result = decode(reply.data, CallToolResult)
        assert result.is_error
        assert "deadline passed" in result.content[0].text, result.content  # type: ignore[union-attr]
        await asyncio.wait_for(running, REPLY_BOUND_S)


@pytest.fixture(scope="module")
def conformance(engine_host: EngineHost, cache_dir: Path, conformance_wasm: Path) -> LoadedComponent:
    return LoadedComponent.load(
        engine_host, ComponentSettings(name="test", path=conformance_wasm), conformance_wasm, cache_dir
    )


async def test_a_resumed_guest_is_not_starved_by_calls_held_back(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent, conformance: LoadedComponent
) -> None:
    """A guest answered by its client waits for a slot beside the held-back calls: the thread that
    holds the slot lets go after its call, so the resumed guest runs next, not after the queue."""
    signer = PrincipalSigner(KEY)
    settings = WorkerSettings(concurrency=1, queue_depth=8)
    service = WorkerService(nc, subjects, settings, [kit, conformance], principal_signer=signer)
    await service.start()
    finished: list[str] = []

    async def spin_as(name: str, seconds: float) -> Msg:
        subject = subjects.call("kit_danger_spin")
        headers = {Header.REQUEST_ID: name, **spin_headers(seconds)}
        signer.stamp(headers, "alice", subject=subject, body=b"{}", valid_for_s=30)
        reply = await nc.request(subject, b"{}", timeout=REPLY_BOUND_S, headers=headers)
        finished.append(name)
        return reply

    try:
        question = await call(nc, subjects, "test_elicitation", {"message": "?"})  # waits: its slot given back
        first = asyncio.create_task(spin_as("first", SPIN_S))
        await eventually(lambda: service.accepted == 2)
        # Queued with longer deadlines: one that took the slot first would spin well past the first.
        queued = [asyncio.create_task(spin_as(f"queued{i}", SPIN_S * 3)) for i in range(3)]
        await eventually(lambda: len(service._held_back) == 3, what="the spins were not held back")
        answer = GuestAnswer(suspension(question), {"elicitation": {"action": "decline"}})
        resumed = await asyncio.wait_for(resume(nc, subjects, question, answer), REPLY_BOUND_S)
        finished.append("resumed")
        assert text(resumed) == "User response: action=decline, content={}"
        await asyncio.wait_for(asyncio.gather(first, *queued), REPLY_BOUND_S)
        # The resumed guest ran as soon as the running spin let go of the slot: before the queue.
        assert finished.index("resumed") < finished.index("queued0"), finished
    finally:
        await service.stop(grace_s=SPIN_S * 2)


async def test_a_stopping_worker_answers_the_calls_held_back_within_its_grace(
    nc: NatsClient, subjects: Subjects, kit: LoadedComponent
) -> None:
    settings = WorkerSettings(concurrency=1, queue_depth=4)
    service = WorkerService(nc, subjects, settings, [kit], principal_signer=SIGNER)
    await service.start()
    running = asyncio.create_task(spin(nc, subjects, "a"))
    await eventually(lambda: service.accepted == 1)
    held = [
        asyncio.create_task(signed_call(nc, subjects, "kit_add", encode({"a": i, "b": 1}), f"p{i}")) for i in range(3)
    ]
    await eventually(lambda: len(service._held_back) == 3, what="the calls were not held back")
    await asyncio.wait_for(service.stop(grace_s=SPIN_S * 5), REPLY_BOUND_S)
    replies = await asyncio.wait_for(asyncio.gather(*held), REPLY_BOUND_S)
    assert [decode(r.data, CallToolResult).structured_content for r in replies] == [1, 2, 3]
    await asyncio.wait_for(running, REPLY_BOUND_S)
    assert service.accepted == 0
