"""Idempotent JetStream provisioning: create the buckets a deployment needs, or reuse them.

Every process provisions at start-up, often while JetStream is still electing its leaders
(a fresh or restarting cluster takes seconds): an API request then times out or answers 503.
So each step is retried until ``PROVISION_TIMEOUT_S``, instead of the process dying and its
supervisor starting it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import structlog
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StreamConfig
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from bus.errors import BucketNotFound, BusTimeout, JetStreamUnavailable, NotFound, RequestRejected, nats_boundary

log = structlog.get_logger(__name__)

KV_HISTORY = 1
"""The catalogue needs only the latest value of each key; watchers see every change anyway."""
PROVISION_TIMEOUT_S: Final = 60.0
"""How long a step keeps trying while JetStream is not answering (leader elections take seconds)."""
RETRY_PAUSE_S: Final = 0.25
CREATE_TIMEOUT_S: Final = 0.5
"""How long a create waits for an answer. Only a stream's provisioner (the registry) may create
it (``bus.permissions``): nats-server drops a create from any other role unanswered, so that
role waits this long, looks again, and finds the stream once the registry has made it. Short,
because every process of a ``toolbus up`` starts together and a worker often asks before the
registry has made the buckets (2 s here held up half of the warm starts by 2 s); a create that
takes longer (a replicated stream on a busy cluster) is looked up and, if need be, sent again,
which the server accepts for an identical stream."""
T = TypeVar("T")


async def patiently(what: str, step: Callable[[], Awaitable[T]], *, timeout_s: float = PROVISION_TIMEOUT_S) -> T:
    """``step()``, tried again while JetStream times out or is unavailable, for up to ``timeout_s``
    (a replicated stream answers 503 until it has elected its leader: seconds after its creation).

    Raises:
        BusTimeout, JetStreamUnavailable: still so when the timeout passed.
        BusError: any other failure of the step, at once.
    """
    give_up_at = time.monotonic() + timeout_s
    attempts = 0
    while True:
        try:
            with nats_boundary:
                return await step()
        except (BusTimeout, JetStreamUnavailable) as exc:
            if time.monotonic() >= give_up_at:
                raise
            if attempts == 0:  # once: a server without JetStream would otherwise fill the log
                log.warning(
                    "JetStream is not answering (or only the registry may create this); trying again",
                    what=what,
                    error=type(exc).__name__,
                    for_s=timeout_s,
                )
            attempts += 1
            await asyncio.sleep(RETRY_PAUSE_S)


async def wait_for_jetstream(nc: NatsClient) -> None:
    """Return once JetStream answers: a fresh cluster first elects its meta leader (seconds)."""
    await patiently("JetStream", nc.jetstream().account_info)


async def ensure_bucket(nc: NatsClient, bucket: str, *, replicas: int = 1, ttl_s: float | None = None) -> KeyValue:
    """Return the KV bucket, creating it if it does not exist (safe to call from many processes).

    ``ttl_s``: a key not written for this long is removed (only when the bucket is created).
    """
    js = nc.jetstream()

    async def step() -> KeyValue:
        try:
            with nats_boundary:
                return await js.key_value(bucket)
        except BucketNotFound:
            # Two processes may race here; creating an identical stream twice is accepted by the server.
            config = KeyValueConfig(bucket=bucket, history=KV_HISTORY, replicas=replicas, ttl=ttl_s)
            return await nc.jetstream(timeout=CREATE_TIMEOUT_S).create_key_value(config)

    return await patiently(f"KV bucket {bucket}", step)


async def ensure_object_store(
    nc: NatsClient, bucket: str, *, replicas: int = 1, ttl_s: float | None = None
) -> ObjectStore:
    """Return the Object Store bucket, creating it if it does not exist (safe from many processes).

    ``ttl_s``: an object older than this is removed (only when the bucket is created).
    """
    js = nc.jetstream()

    async def step() -> ObjectStore:
        try:
            with nats_boundary:
                return await js.object_store(bucket)
        except NotFound:  # BucketNotFound among them
            return await nc.jetstream(timeout=CREATE_TIMEOUT_S).create_object_store(
                bucket, ObjectStoreConfig(replicas=replicas, ttl=ttl_s)
            )

    return await patiently(f"object store {bucket}", step)


async def ensure_stream(nc: NatsClient, config: StreamConfig) -> None:
    """Create the stream ``config`` describes unless it exists (safe to call from many processes)."""
    js = nc.jetstream()
    name = config.name
    assert name is not None

    async def step() -> None:
        try:
            with nats_boundary:
                await js.stream_info(name)
        except NotFound:
            try:
                with nats_boundary:
                    await nc.jetstream(timeout=CREATE_TIMEOUT_S).add_stream(config)
            except RequestRejected:
                pass  # created by another process meanwhile

    await patiently(f"stream {name}", step)
