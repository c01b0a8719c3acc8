"""Idempotent JetStream provisioning: create the buckets a deployment needs, or reuse them."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, ObjectStoreConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from bus.subjects import Subjects

KV_HISTORY = 1
"""The catalogue needs only the latest value of each key; watchers see every change anyway."""


async def ensure_bucket(nc: NatsClient, bucket: str, *, replicas: int = 1) -> KeyValue:
    """Return the KV bucket, creating it if it does not exist (safe to call from many processes)."""
    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        # Two processes may race here; creating an identical stream twice is accepted by the server.
        return await js.create_key_value(KeyValueConfig(bucket=bucket, history=KV_HISTORY, replicas=replicas))


async def ensure_object_store(nc: NatsClient, bucket: str, *, replicas: int = 1) -> ObjectStore:
    """Return the Object Store bucket, creating it if it does not exist (safe from many processes)."""
    js = nc.jetstream()
    try:
        return await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_object_store(bucket, ObjectStoreConfig(replicas=replicas))


async def provision(nc: NatsClient, subjects: Subjects, *, replicas: int = 1) -> None:
    """Create every bucket the deployment uses."""
    for bucket in (subjects.tools_bucket, subjects.workers_bucket, subjects.packages_bucket):
        await ensure_bucket(nc, bucket, replicas=replicas)
    await ensure_object_store(nc, subjects.artifacts_store, replicas=replicas)
