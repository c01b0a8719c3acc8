"""Attacks on the bus by a holder of one role's credentials, against a real nats-server with the
generated permissions. Each test is an attempt that must fail; where the attempt can only fail
by being refused (no answer), the same request from a role that may send it is shown to work,
so a probe that cannot reach the server never passes for a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, StreamConfig, StreamSource

from bus.connection import caught_up, connect, published_only, published_only_plain
from bus.direct_delivery import subscribe_direct
from bus.permissions import ROLES, store_rows
from bus.provisioning import ensure_bucket
from bus.subjects import Subjects, subject_matches
from registry.audit_stream import ensure_audit_stream
from tests.bus.secure_nats import API_TIMEOUT_S, SecureServer, permission_errors, secure_nats
from tests.conftest import eventually

SUBJECTS = Subjects("attack")

REFUSED_WAIT_S = 0.5
"""A refused API request gets no answer; an allowed one on loopback answers in milliseconds."""


@pytest.fixture
def bare_server(tmp_path: Path) -> Iterator[SecureServer]:
    """A secured nats-server on which nothing is provisioned yet: every stream is missing."""
    with secure_nats(tmp_path, SUBJECTS) as server:
        yield server


def stealing_stream(name: str) -> StreamConfig:
    """A stream named like one of the catalogue's that copies the audit trail into itself and
    captures core subjects its creator may not subscribe to (the operator's replies, release verbs)."""
    return StreamConfig(
        name=name,
        subjects=[f"{SUBJECTS.prefix}.registry.>", "_INBOX_operator.>"],
        sources=[StreamSource(name=SUBJECTS.audit_stream)],
    )


async def test_only_the_registry_creates_streams(bare_server: SecureServer) -> None:
    # A role that could create a missing stream could make it source the audit trail and read it
    # (nats-server checks neither sources nor subjects against the creator): seen before the fix.
    creates = [f"$JS.API.STREAM.CREATE.{row.stream}" for row in store_rows(SUBJECTS)]
    for role in ("worker", "gateway", "operator"):
        errors = await permission_errors(bare_server, role, creates, [])
        assert len(errors) == len(creates), (role, errors)
    assert await permission_errors(bare_server, "registry", creates, []) == []
    # The attack itself, end to end: the worker's stealing stream is never made, the registry's is.
    registry = await connect(bare_server.as_role("registry"), name="registry", allow_reconnect=False)
    worker = await connect(bare_server.as_role("worker"), name="worker", allow_reconnect=False)
    try:
        await ensure_audit_stream(registry, SUBJECTS)
        with pytest.raises(nats.errors.TimeoutError):  # refused: no answer
            await worker.jetstream(timeout=REFUSED_WAIT_S).add_stream(stealing_stream(f"KV_{SUBJECTS.packages_bucket}"))
        created = await registry.jetstream(timeout=API_TIMEOUT_S).add_stream(stealing_stream(SUBJECTS.tasks_stream))
        assert created.config.name == SUBJECTS.tasks_stream
    finally:
        await worker.close()
        await registry.close()


DANGEROUS_API = [
    "$JS.API.STREAM.LIST",  # every stream's config
    f"$JS.API.STREAM.SNAPSHOT.{SUBJECTS.audit_stream}",  # a stream's whole content
    f"$JS.API.STREAM.RESTORE.{SUBJECTS.audit_stream}",
    f"$JS.API.STREAM.UPDATE.{SUBJECTS.audit_stream}",
    f"$JS.API.STREAM.DELETE.{SUBJECTS.audit_stream}",
    f"$JS.API.STREAM.LEADER.STEPDOWN.{SUBJECTS.audit_stream}",
    f"$JS.API.STREAM.PEER.REMOVE.{SUBJECTS.audit_stream}",
    "$JS.API.META.LEADER.STEPDOWN",
    "$JS.API.SERVER.REMOVE",
    "$JS.API.ACCOUNT.PURGE.$G",
    "$SYS.REQ.SERVER.PING",
    "$SYS.REQ.ACCOUNT.PING.CONNZ",
]
"""API subjects no role may publish to."""


@pytest.mark.parametrize("role", ROLES)
async def test_no_role_reaches_the_dangerous_jetstream_api(bare_server: SecureServer, role: str) -> None:
    errors = await permission_errors(bare_server, role, DANGEROUS_API, [])
    assert len(errors) == len(DANGEROUS_API), errors


def sniffing(role: str) -> list[str]:
    """Subscriptions that would hear what ``role`` has no business hearing."""
    others = [f"_INBOX_{other}.>" for other in ROLES if other != role]
    wide = [">", "$SYS.>", "$JS.>", "$JS.ACK.>", "$JS.EVENT.>", "$KV.>", "$O.>", f"{SUBJECTS.prefix}.>"]
    stores = [f"$KV.{SUBJECTS.tools_bucket}.>", f"$KV.{SUBJECTS.tasks_bucket}.>", f"$O.{SUBJECTS.artifacts_store}.>"]
    # The gateway hears audit events as they are published, for the console's live tail
    # (docs/console.md); reading the stream's history stays the operator's.
    audit = [] if role == "gateway" else [SUBJECTS.audit_any]
    return [*others, *wide, *stores, *audit] + ([] if role == "operator" else ["_INBOX.>"])


@pytest.mark.parametrize("role", ROLES)
async def test_no_role_hears_another_roles_replies_or_a_store_being_written(
    bare_server: SecureServer, role: str
) -> None:
    # Core subscriptions see a KV put or an object chunk as it is published, and the replies to
    # another role's requests (call results, task records) as they are sent: all refused.
    subscriptions = sniffing(role)
    errors = await permission_errors(bare_server, role, [], subscriptions)
    assert len(errors) == len(subscriptions), (subscriptions, errors)


@pytest.mark.parametrize("role", ROLES)
async def test_no_role_forges_a_reply_to_another_role(bare_server: SecureServer, role: str) -> None:
    # A fake answer published to another role's inbox (a call result the gateway would relay)
    # is refused; a real reply goes through allow_responses, only to a request actually received.
    forged = [f"_INBOX_{other}.forged.1" for other in ROLES if other != role]
    forged += [] if role == "operator" else ["_INBOX.forged.1"]
    errors = await permission_errors(bare_server, role, forged, [])
    assert len(errors) == len(forged), (forged, errors)


@pytest.mark.parametrize("target", ["registry release verb", "worker call, read directly"])
async def test_a_push_consumer_cannot_deliver_into_a_subject_its_creator_may_not_publish(
    bare_server: SecureServer, target: str
) -> None:
    # A worker may read and write the task records, so it may create a push consumer on them:
    # nats-server delivers to any deliver_subject, checked against nobody's permissions. Aimed
    # at a release verb, the registry's subscription hears it (seen: it would retire a tool);
    # aimed at a tool's call subject, a worker's (which nats-py hands to the worker as it reads
    # it: bus.direct_delivery, in a queue group) would run a guest. Every subscription of the
    # registry and the workers drops such a delivery: it keeps its stream subject ($KV.…), which
    # the subscription does not name (bus.connection.published_only).
    registry = await connect(bare_server.as_role("registry"), name="registry", allow_reconnect=False)
    worker = await connect(bare_server.as_role("worker"), name="worker", allow_reconnect=False)
    operator = await connect(bare_server.as_role("operator"), name="operator", allow_reconnect=False)
    gateway = await connect(bare_server.as_role("gateway"), name="gateway", allow_reconnect=False)
    try:
        await ensure_bucket(registry, SUBJECTS.tasks_bucket)
        raw: asyncio.Queue[Msg] = asyncio.Queue()
        handled: list[Msg] = []

        async def hear(msg: Msg) -> None:
            await raw.put(msg)

        async def handle(msg: Msg) -> None:
            handled.append(msg)

        if target == "registry release verb":
            subject, listener, sender = SUBJECTS.registry_release("retire"), registry, operator
            await registry.subscribe(subject, cb=published_only(subject, handle))
        else:
            subject, listener, sender = SUBJECTS.call("victim"), worker, gateway
            checked = published_only_plain(subject, handled.append)
            await subscribe_direct(worker, subject, checked, queue=SUBJECTS.worker_queue)
        await listener.subscribe(subject, cb=hear)
        await caught_up(listener)
        js = worker.jetstream(timeout=API_TIMEOUT_S)
        await js.publish(f"$KV.{SUBJECTS.tasks_bucket}.forged", b'{"tool":"victim"}')
        await js.add_consumer(f"KV_{SUBJECTS.tasks_bucket}", ConsumerConfig(deliver_subject=subject))
        delivered = await asyncio.wait_for(raw.get(), 10)  # the attack reaches the subject…
        assert delivered.data == b'{"tool":"victim"}' and delivered.subject.startswith("$KV.")
        await caught_up(listener)
        assert handled == []  # …and is dropped
        await sender.publish(subject, b'{"tool":"genuine"}', reply="_INBOX_gateway.x")  # a real one gets through
        await eventually(lambda: len(handled) == 1, what="a genuine request was dropped")
        assert handled[0].data == b'{"tool":"genuine"}'
    finally:
        for nc in (gateway, operator, worker, registry):
            await nc.close()


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b", "$KV.a.b", False),
        ("toolbus.registry.retire", "$KV.toolbus_tasks.forged", False),
    ],
)
def test_subject_matching_is_nats_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches
