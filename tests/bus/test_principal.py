"""A principal signature binds what it authorises: subject, request id, principal, expiry, body.

The attacks are the issue's: a NATS subscriber copies a gateway-signed call's headers onto
``tasks.list`` / ``tasks.result`` to read another principal's tasks; or onto another body, or
keeps them for later. Against a real nats-server, a real registry and the gateway's real
``ToolCaller``; every attempt must fail closed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.embedded import EmbeddedNatsServer
from bus.principal import CLOCK_SKEW_S, PrincipalSigner
from bus.subjects import Header, Subjects
from gateway.calls import ToolCaller
from registry.service import RegistryService
from schemas.codec import decode, encode
from schemas.config import RegistrySettings
from schemas.errors import ErrorCode
from schemas.wire import ErrorReply, TaskList, TaskQuery, TaskRecord, TaskSubmit, ToolDescriptor, WorkerAnnouncement
from tests.conftest import FAST_TASKS, TEST_ANNOUNCE_INTERVAL_S, eventually

KEY = "principal-test-key-principal-test-key"
SIGNER = PrincipalSigner(KEY)


def signed(subject: str, body: bytes, principal: str = "alice", valid_for_s: float = 30.0) -> dict[str, str]:
    headers = {Header.REQUEST_ID: "req-1"}
    SIGNER.stamp(headers, principal, subject=subject, body=body, valid_for_s=valid_for_s)
    return headers


def test_the_signature_holds_only_for_what_it_was_made_for() -> None:
    subject, body = "toolbus.call.kit_add", b'{"a":1,"b":2}'
    headers = signed(subject, body)
    assert SIGNER.verified(headers, subject, body) == "alice"
    assert SIGNER.verified(headers, "toolbus.tasks.list", body) is None  # another subject
    assert SIGNER.verified(headers, subject, b'{"a":1,"b":3}') is None  # another body
    assert SIGNER.verified({**headers, Header.REQUEST_ID: "req-2"}, subject, body) is None  # another request
    assert SIGNER.verified({**headers, Header.PRINCIPAL: "bob"}, subject, body) is None  # another principal
    expires, _, mac = headers[Header.PRINCIPAL_SIGNATURE].partition(".")
    later = f"{int(expires) + 3_600_000}.{mac}"  # the expiry pushed out by an hour
    assert SIGNER.verified({**headers, Header.PRINCIPAL_SIGNATURE: later}, subject, body) is None
    for malformed in ("", mac, f"soon.{mac}", f"{expires}.", "."):
        assert SIGNER.verified({**headers, Header.PRINCIPAL_SIGNATURE: malformed}, subject, body) is None
    assert PrincipalSigner("another-key-another-key").verified(headers, subject, body) is None


def test_an_expired_signature_is_refused() -> None:
    subject, body = "toolbus.call.kit_add", b"{}"
    # Expired longer ago than the clock skew a deployment is allowed.
    headers = signed(subject, body, valid_for_s=-(CLOCK_SKEW_S + 1))
    assert SIGNER.verified(headers, subject, body) is None
    assert SIGNER.verified(signed(subject, body, valid_for_s=1), subject, body) == "alice"
    assert time.time() > 0  # the clock is the real one: nothing here is patched


@pytest.fixture
async def registry(nc: NatsClient, subjects: Subjects) -> AsyncIterator[RegistryService]:
    service = RegistryService(
        nc,
        subjects,
        RegistrySettings(),
        announce_interval_s=TEST_ANNOUNCE_INTERVAL_S,
        tasks=FAST_TASKS,
        principal_signer=SIGNER,
    )
    await service.start()
    yield service
    await service.stop()


async def captured_call(nc: NatsClient, subjects: Subjects, principal: str) -> Msg:
    """A call the gateway's ``ToolCaller`` signs for ``principal``, as a subscriber sees it."""
    heard: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def answer(msg: Msg) -> None:
        if not heard.done():
            heard.set_result(msg)
        await msg.respond(b'{"content":[]}')

    tool = "replay_target"
    subscription = await nc.subscribe(subjects.call(tool), cb=answer)
    try:
        caller = ToolCaller(nc, subjects, timeout_s=10, signer=SIGNER)
        await caller.call(tool, {"a": 1}, era="2025-11-25", principal=principal)
        return await asyncio.wait_for(heard, 10)
    finally:
        await subscription.unsubscribe()


async def test_a_signed_call_replayed_onto_task_subjects_is_refused(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    # kit_add is known (a worker offered it, then left), so its task is queued, not refused.
    gone = ToolDescriptor(name="kit_add", input_schema={"type": "object"})
    await nc.publish(subjects.announce, encode(WorkerAnnouncement(worker_id="gone", tools=[gone], state="stopped")))
    await eventually(lambda: registry.catalogue is not None and registry.catalogue.knows("kit_add"))
    # alice has a task (submitted the way an operator holding the key does).
    submit_subject, submit_body = (
        subjects.task_request("submit"),
        encode(TaskSubmit(tool="kit_add", arguments={"a": 1, "b": 2}, principal="alice")),
    )
    reply = await nc.request(submit_subject, submit_body, timeout=10, headers=signed(submit_subject, submit_body))
    task = decode(reply.data, TaskRecord)
    assert task.principal == "alice"

    call = await captured_call(nc, subjects, "alice")
    assert call.headers is not None and call.headers[Header.PRINCIPAL] == "alice"
    lifted = dict(call.headers)
    for verb, query in (
        ("list", TaskQuery(principal="alice")),
        ("result", TaskQuery(task_id=task.task_id, principal="alice")),
        ("get", TaskQuery(task_id=task.task_id, principal="alice")),
        ("cancel", TaskQuery(task_id=task.task_id, principal="alice")),
    ):
        replayed = await nc.request(subjects.task_request(verb), encode(query), timeout=10, headers=lifted)
        assert replayed.headers is not None and Header.ERROR in replayed.headers, (verb, replayed.data)
        assert decode(replayed.data, ErrorReply).error.code == ErrorCode.FORBIDDEN, verb
    # The same headers with the call's own body, on a task subject: a request claiming no
    # principal is plain NATS, which sees none of alice's tasks.
    replayed = await nc.request(subjects.task_request("list"), call.data, timeout=10, headers=lifted)
    assert task.task_id not in replayed.data.decode()

    # Signed for what it is, the request is served: the refusals above were the binding.
    list_subject, list_body = subjects.task_request("list"), encode(TaskQuery(principal="alice"))
    honest = await nc.request(list_subject, list_body, timeout=10, headers=signed(list_subject, list_body))
    assert [t.task_id for t in decode(honest.data, TaskList).tasks] == [task.task_id]


async def test_a_signed_task_request_is_refused_once_expired(
    nc: NatsClient, subjects: Subjects, registry: RegistryService
) -> None:
    subject, body = subjects.task_request("list"), encode(TaskQuery(principal="alice"))
    stale = signed(subject, body, valid_for_s=-(CLOCK_SKEW_S + 1))
    reply = await nc.request(subject, body, timeout=10, headers=stale)
    assert decode(reply.data, ErrorReply).error.code == ErrorCode.FORBIDDEN


# -- header tricks: NATS headers may repeat and differ in case; the MAC input is framed ----------


def raw_publish(url: str, subject: str, header_lines: list[str], body: bytes) -> None:
    """Publish with headers exactly as written (repeats included), over a bare NATS socket."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    head = ("NATS/1.0\r\n" + "".join(f"{line}\r\n" for line in header_lines) + "\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.recv(4096)  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
        sock.sendall(f"HPUB {subject} {len(head)} {len(head) + len(body)}\r\n".encode() + head + body + b"\r\n")
        sock.sendall(b"PING\r\n")
        answer = b""
        while b"PONG" not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        assert b"-ERR" not in answer, answer


@pytest.mark.parametrize(
    "extra",
    [
        ["Toolbus-Principal: mallory"],  # a second principal after the signed one
        ["toolbus-principal: mallory"],  # another case
        ["TOOLBUS-PRINCIPAL: mallory", "Toolbus-Principal: mallory"],
    ],
    ids=["repeated", "lower case", "upper case and repeated"],
)
async def test_a_repeated_or_recased_principal_header_never_names_another_principal(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, extra: list[str]
) -> None:
    subject, body = subjects.call("kit_add"), b'{"a":1,"b":2}'
    headers = signed(subject, body)
    heard: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await heard.put(msg)

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    lines = [f"{name}: {value}" for name, value in headers.items()]
    for arrangement in (lines + extra, extra + lines):
        await asyncio.to_thread(raw_publish, nats_server.url, subject, arrangement, body)
        msg = await asyncio.wait_for(heard.get(), 5)
        # Whichever copy the client keeps, the verified principal is the signed one or none.
        assert SIGNER.verified(msg.headers, msg.subject, msg.data) in ("alice", None), msg.headers


def test_the_signed_fields_are_framed_so_no_two_splits_collide() -> None:
    # Plain concatenation would make these pairs sign the same bytes; length prefixes do not.
    body = b"{}"
    headers = {Header.REQUEST_ID: "b.c"}
    SIGNER.stamp(headers, "alice", subject="toolbus.call.a", body=body, valid_for_s=30)
    moved = {**headers, Header.REQUEST_ID: "c"}
    assert SIGNER.verified(moved, "toolbus.call.a.b", body) is None
    assert SIGNER.verified(moved, "toolbus.call.a.b.", body) is None
    separators = {Header.REQUEST_ID: "req"}
    SIGNER.stamp(separators, "a|b", subject="s", body=body, valid_for_s=30)
    assert SIGNER.verified({**separators, Header.PRINCIPAL: "a", Header.REQUEST_ID: "req|b"}, "s", body) is None
    assert SIGNER.verified({**separators, Header.PRINCIPAL: "a|b"}, "s", body) == "a|b"
    # The body is digested, not appended: moving bytes between the principal and the body fails.
    assert SIGNER.verified({**separators, Header.PRINCIPAL: "a|b{}"}, "s", b"") is None


def test_the_mac_of_fixed_fields_never_changes() -> None:
    # Gateways and workers of two releases check each other's signatures during an upgrade: the
    # bytes the MAC covers are the wire format (this value is the one the first version made).
    signer = PrincipalSigner("k" * 32)
    mac = signer._mac("toolbus.call.kit_add", "rid-1", "alice@example", 1765120000123, b'{"a":2}')
    assert mac == "Sw_QQPOtnU1INCqhPprfIOkSTU8sH6acWhmdKPa1DHk"


@pytest.mark.parametrize(
    "respell",
    [
        lambda expiry, mac: f"0{expiry}.{mac}",  # the same instant, spelled as stamp() never does
        lambda expiry, mac: f"{expiry}.{mac[:-1]}\N{LATIN SMALL LETTER E WITH ACUTE}",
        lambda expiry, mac: f"{expiry}.{mac}\N{LATIN SMALL LETTER E WITH ACUTE}",
        lambda expiry, mac: f"{expiry}.\ud800",  # a lone surrogate, as no UTF-8 header can carry
        lambda expiry, mac: f"{expiry}.{mac}.{mac}",
        lambda expiry, mac: f" {expiry}.{mac}",
        lambda expiry, mac: f"+{expiry}.{mac}",
        lambda expiry, mac: f"{expiry}_0.{mac}",
    ],
)
def test_a_respelled_signature_is_refused_without_raising(respell: Any) -> None:
    body = b"{}"
    headers = {Header.REQUEST_ID: "req"}
    SIGNER.stamp(headers, "alice", subject="s", body=body, valid_for_s=30)
    assert SIGNER.verified(headers, "s", body) == "alice"
    expiry, _, mac = headers[Header.PRINCIPAL_SIGNATURE].partition(".")
    assert SIGNER.verified({**headers, Header.PRINCIPAL_SIGNATURE: respell(expiry, mac)}, "s", body) is None
