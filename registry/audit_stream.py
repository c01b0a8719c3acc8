"""The audit stream: a JetStream stream that keeps what happened; ``toolbus audit`` (``cli.audit``) reads it.

Named for the stream, not "audit": the gateway's ``gateway.audit_trail`` writes events into it,
this module creates the stream and reads it back.

The stream ``PREFIX_AUDIT`` captures, as they are published:

- ``PREFIX.events.>``: publish, rollback, retire, deprecate, worker joins and leaves;
- ``PREFIX.tasks.status.>``: every task transition (the whole record: tool, principal,
  status, attempts, worker);
- ``PREFIX.audit.>``: events published for the audit trail alone by the gateways
  (``gateway.audit_trail``): every tool call (``CallAuditEvent``, arguments redacted per ``[audit]``)
  and every request refused for who sent it (``AuthFailureEvent``).

Nothing publishes twice for the audit: the stream listens to the subjects the system already
uses, so an event cannot be on the bus and missing from the trail. Retention is by age
(``AUDIT_RETENTION_S``) and by count (``[registry] audit_max_events``), on file storage.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from bus.errors import NotFound, nats_boundary
from bus.provisioning import ensure_stream
from bus.subjects import Subjects
from schemas.config import RegistrySettings

AUDIT_RETENTION_S = 30 * 24 * 60 * 60.0
"""Audit events are kept 30 days."""
DEFAULT_AUDIT_MAX_EVENTS = RegistrySettings().audit_max_events


async def ensure_audit_stream(
    nc: NatsClient, subjects: Subjects, *, replicas: int = 1, max_events: int = DEFAULT_AUDIT_MAX_EVENTS
) -> None:
    """Create the audit stream if it does not exist (idempotent; many processes may race).

    Capped by age and by count: with one event per tool call, age alone lets the stream (and
    nats-server's memory, which follows it: bench/soak.py) grow with traffic."""
    await ensure_stream(
        nc,
        StreamConfig(
            name=subjects.audit_stream,
            subjects=subjects.audit_subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=AUDIT_RETENTION_S,
            max_msgs=max_events,
            num_replicas=replicas,
        ),
    )


async def recent(nc: NatsClient, subjects: Subjects, limit: int) -> list[tuple[datetime, str, dict[str, Any]]]:
    """The last ``limit`` audit events, oldest first: (time, subject, body).

    Raises:
        NotFound: there is no audit stream.
        BusError: NATS failed the read (a user without access to the stream gets ``BusTimeout``).
    """
    js = nc.jetstream()
    name = subjects.audit_stream
    with nats_boundary:
        info = await js.stream_info(name)
    last = info.state.last_seq or 0
    if last == 0:
        return []
    first = max(info.state.first_seq or 1, last - limit + 1)
    events = []
    for seq in range(first, last + 1):
        try:
            with nats_boundary:
                msg = await js.get_msg(name, seq)
        except NotFound:
            continue  # aged out meanwhile
        when = msg.time or datetime.now(UTC)
        try:
            body = json.loads(msg.data or b"")
        except ValueError:
            body = {"raw": (msg.data or b"").decode("utf-8", "replace")}
        events.append((when, msg.subject or "", body))
    return events
