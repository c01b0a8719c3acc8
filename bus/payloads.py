"""The claim check: bodies larger than one NATS message travel through the Object Store.

A call's arguments or a reply larger than the server's ``max_payload`` (1 MiB by default) is
put into the Object Store bucket ``PREFIX_payloads`` under a random, unguessable name; the
message itself carries an empty body and the headers ``Toolbus-Payload: <name>`` and
``Toolbus-Payload-Digest: SHA-256=<base64url>``. The reader fetches the object, checks the
digest the Object Store recorded against the header's and what it read against that digest,
and, as its one consumer, deletes it; the bucket's TTL removes what nobody claimed.

Everything is bounded by one cap, ``[nats] max_payload_bytes``: a body over it is never put,
and an object over it is never read.

Plain NATS callers use the same convention (docs/bus-protocol.md, "Payloads of any size"):
``nats object put PREFIX_payloads FILE --name <random>`` and then a request with the header.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, ObjectInfo, ObjectMeta, ObjectMetaOptions
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DIGEST_TEMPLATE, OBJ_STREAM_TEMPLATE, ObjectStore

from bus.errors import BusError, NotFound, PayloadGone, PayloadRefused, PayloadTooLarge, nats_boundary
from bus.provisioning import ensure_object_store, patiently
from bus.subjects import Header, Subjects
from schemas.config import DEFAULT_MAX_PAYLOAD_BYTES

PAYLOAD_TTL_S: Final = 15 * 60.0
"""How long an object stays in the bucket: far longer than a call may wait (``max_call_timeout_s``,
300 s by default) between the put and the claim, short enough that an unclaimed 64 MiB body
(a caller that gave up) does not sit on disk for long."""
HEADROOM_BYTES: Final = 8 * 1024
"""Room left in a message for its headers: a body up to ``max_payload - HEADROOM_BYTES`` travels inline."""
CHUNK_BYTES: Final = 512 * 1024
"""Object Store chunk size: fewer, larger chunks than nats-py's 128 KiB mean fewer JetStream
acknowledgements per put (each chunk is one publish awaiting its ack). Must stay below ``max_payload``."""
FETCH_CHUNKS: Final = 16
"""Chunks asked for at once when reading (8 MiB): a client subscription holds at most 64 MiB
pending before nats-py drops messages as a slow consumer, so never the whole of a large object."""
UNAVAILABLE_PATIENCE_S: Final = 10.0
"""How long a put or a read is tried again while JetStream answers 503 (a replicated bucket
electing its leader, seconds after a cluster starts: seen on a fresh R3 cluster's first claim check)."""
TRANSFER_TIMEOUT_S: Final = 60.0
"""Longest a put or a get may take (64 MiB moves in well under a second on one host)."""
_NAME: Final = re.compile(r"[A-Za-z0-9_-]{22,128}")
"""An object name a reader accepts: 22+ characters of a random token (128 bits of base64url),
so no name a reader is sent can be guessed from another one, or be a plain file name."""


def too_large_message(what: str, size: int, limit: int) -> str:
    """How a body over the cap is refused, wherever it is: ``what`` is ``"the arguments"``, …"""
    return f"{what}: {size} bytes, more than max_payload_bytes allows ({limit} bytes)"


def new_object_name() -> str:
    """A fresh unguessable object name (192 random bits, base64url)."""
    return secrets.token_urlsafe(24)


class Payloads:
    """The claim checks of one deployment, bounded by ``max_bytes``.

    The bucket is looked up (created by its provisioner, the registry) on first use, so a process
    that never meets a large body never touches it.
    """

    def __init__(
        self, nc: NatsClient, subjects: Subjects, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, replicas: int = 1
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self.max_bytes = max_bytes
        self._replicas = replicas
        self._store: ObjectStore | None = None

    def inline_limit(self) -> int:
        """The largest body that travels in the message itself."""
        return self._nc.max_payload - HEADROOM_BYTES

    def too_large(self, what: str, size: int) -> PayloadTooLarge:
        """The error for ``what`` (``"the arguments"``, ``"the result"``…) of ``size`` bytes over the cap."""
        return PayloadTooLarge(too_large_message(what, size, self.max_bytes), size=size, limit=self.max_bytes)

    async def bucket(self) -> ObjectStore:
        """The bucket, created with its TTL if missing (only the registry may create it under
        ``toolbus up``'s permissions; others wait for it, ``bus.provisioning``)."""
        if self._store is None:
            self._store = await ensure_object_store(
                self._nc, self._subjects.payloads_store, replicas=self._replicas, ttl_s=PAYLOAD_TTL_S
            )
        return self._store

    async def put(self, body: bytes) -> tuple[str, str]:
        """Store ``body`` under a fresh name; its name and digest.

        Raises:
            PayloadTooLarge: ``body`` is over ``max_bytes``.
            BusError: the Object Store failed (or took longer than ``TRANSFER_TIMEOUT_S``).
        """
        if len(body) > self.max_bytes:
            raise self.too_large("the body", len(body))
        name = new_object_name()
        return name, await put_object(await self.bucket(), name, body)

    async def get(self, name: str, digest: str | None = None) -> bytes:
        """The body stored as ``name`` (its digest must be ``digest`` when given).

        Raises:
            PayloadRefused: ``name`` is not an object name we accept, or the digest differs.
            PayloadGone: no such object (expired, deleted, never put).
            PayloadTooLarge: the object is over ``max_bytes`` (it is not read).
            BusError: the Object Store failed (or took longer than ``TRANSFER_TIMEOUT_S``).
        """
        if not _NAME.fullmatch(name):
            raise PayloadRefused(
                f"{Header.PAYLOAD} must name an object by a random token of 22 to 128 letters, digits, "
                "'_' or '-' (an unguessable name: nobody else can read or replace it)"
            )
        store = await self.bucket()
        try:
            info = await patiently("a claim check", lambda: store.get_info(name), timeout_s=UNAVAILABLE_PATIENCE_S)
        except NotFound:
            raise PayloadGone(
                f"object {name!r} of {self._subjects.payloads_store} does not exist (expired, already "
                "claimed, or never stored)"
            ) from None
        if digest and info.digest != digest:
            raise PayloadRefused(f"object {name!r} does not have the digest {Header.PAYLOAD_DIGEST} names")
        if (info.size or 0) > self.max_bytes:
            raise self.too_large(f"object {name!r}", info.size or 0)
        return await read_object(self._nc, self._subjects.payloads_store, info)

    async def delete(self, name: str) -> None:
        """Remove a claimed object now rather than at its TTL (best effort, never raises)."""
        try:
            store = await self.bucket()
            with nats_boundary:
                await store.delete(name)
        except BusError:
            pass  # the TTL removes it

    async def claim(self, headers: Mapping[str, str] | None, body: bytes) -> tuple[bytes, str | None]:
        """The real body of a message, and the name of the object it came from (None: inline).

        Raises:
            PayloadRefused: the message has both a body and a claim check, or an invalid one.
            PayloadGone, PayloadTooLarge, BusError: as ``get``.
        """
        name = headers.get(Header.PAYLOAD) if headers else None
        if name is None:
            return body, None
        if body.strip():
            raise PayloadRefused(f"a message with {Header.PAYLOAD} must have an empty body (it has {len(body)} bytes)")
        assert headers is not None
        return await self.get(name, headers.get(Header.PAYLOAD_DIGEST)), name

    async def take(self, headers: Mapping[str, str] | None, body: bytes) -> bytes:
        """``claim`` for the one reader of a reply: the real body, and its object deleted.

        Raises:
            PayloadRefused, PayloadGone, PayloadTooLarge, BusError: as ``claim``.
        """
        body, name = await self.claim(headers, body)
        if name is not None:
            await self.delete(name)
        return body

    async def offload(self, body: bytes, headers: dict[str, str] | None) -> tuple[bytes, dict[str, str] | None]:
        """``body`` and ``headers`` as they travel: unchanged when the body fits one message, else an
        empty body and the claim check headers (added to a copy of ``headers``).

        Raises:
            PayloadTooLarge, BusError: as ``put``.
        """
        if len(body) <= self.inline_limit():
            return body, headers
        name, digest = await self.put(body)
        return b"", {**(headers or {}), Header.PAYLOAD: name, Header.PAYLOAD_DIGEST: digest}


def _digest(body: bytes) -> str:
    """The Object Store's digest of ``body`` (``SHA-256=<base64url>``)."""
    return OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode())


async def read_object(nc: NatsClient, bucket: str, info: ObjectInfo) -> bytes:
    """The content of the object ``info`` describes in Object Store ``bucket``, checked against
    its size and digest.

    Not ``ObjectStore.get``: nats-py reads through an ordered push consumer, ~20 MB/s here (a
    10 MiB body took 0.5 s, 64 MiB 1.5 s); fetching the chunks in batches took 0.04 s and 0.28 s.

    Raises:
        PayloadRefused: what was read does not match the size and digest recorded.
        BusError: the Object Store failed (or took longer than ``TRANSFER_TIMEOUT_S``).
    """
    if not info.size:
        return b""
    try:
        read = patiently("a claim check", lambda: _read_chunks(nc, bucket, info), timeout_s=UNAVAILABLE_PATIENCE_S)
        body = await asyncio.wait_for(read, TRANSFER_TIMEOUT_S)
    except TimeoutError as exc:
        raise BusError(f"reading object {info.name!r} took longer than {TRANSFER_TIMEOUT_S:g} s") from exc
    if len(body) != info.size or _digest(body) != info.digest:
        raise PayloadRefused(f"object {info.name!r} does not match the size and digest it was stored with")
    return body


async def _read_chunks(nc: NatsClient, bucket: str, info: ObjectInfo) -> bytes:
    subscription = await nc.jetstream().pull_subscribe(
        OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=info.nuid),
        stream=OBJ_STREAM_TEMPLATE.format(bucket=bucket),
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=TRANSFER_TIMEOUT_S),
    )
    parts: list[bytes] = []
    received = 0
    try:
        while received < (info.size or 0):
            for msg in await subscription.fetch(FETCH_CHUNKS, timeout=TRANSFER_TIMEOUT_S):
                parts.append(msg.data)
                received += len(msg.data)
    finally:
        await subscription.unsubscribe()
    return b"".join(parts)


async def put_object(store: ObjectStore, name: str, body: bytes) -> str:
    """Store ``body`` as ``name`` in ``store`` in ``CHUNK_BYTES`` chunks; its digest.

    Raises:
        BusError: the Object Store failed (or took longer than ``TRANSFER_TIMEOUT_S``).
    """
    meta = ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))
    try:
        put = patiently("a claim check", lambda: store.put(name, body, meta=meta), timeout_s=UNAVAILABLE_PATIENCE_S)
        info = await asyncio.wait_for(put, TRANSFER_TIMEOUT_S)
    except TimeoutError as exc:
        raise BusError(f"storing {len(body)} bytes took longer than {TRANSFER_TIMEOUT_S:g} s") from exc
    return info.digest or ""
