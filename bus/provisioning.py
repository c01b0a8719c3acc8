"""Idempotent JetStream provisioning: create the buckets a deployment needs, or reuse them."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

KV_HISTORY = 1
"""The catalogue needs only the latest value of each key; watchers see every change anyway."""


async def ensure_bucket(nc: NatsClient, bucket: str, *, replicas: int = 1, ttl_s: float | None = None) -> KeyValue:
    """Return the KV bucket, creating it if it does not exist (safe to call from many processes).

    ``ttl_s``: a key not written for this long is removed (only when the bucket is created).
    """
    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        # Two processes may race here; creating an identical stream twice is accepted by the server.
        config = KeyValueConfig(bucket=bucket, history=KV_HISTORY, replicas=replicas, ttl=ttl_s)
        return await js.create_key_value(config)


async def ensure_object_store(nc: NatsClient, bucket: str, *, replicas: int = 1) -> ObjectStore:
    """Return the Object Store bucket, creating it if it does not exist (safe from many processes)."""
    js = nc.jetstream()
    try:
        return await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_object_store(bucket, ObjectStoreConfig(replicas=replicas))


async def ensure_stream(nc: NatsClient, config: StreamConfig) -> None:
    """Create the stream ``config`` describes unless it exists (safe to call from many processes)."""
    js = nc.jetstream()
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except BadRequestError:
            pass  # created by another process meanwhile
