"""The audit trail: a JetStream stream that keeps what happened, and ``toolbus audit`` to read it.

The stream ``PREFIX_AUDIT`` captures, as they are published:

- ``PREFIX.events.>``: publish, rollback, retire, deprecate, worker joins and leaves;
- ``PREFIX.tasks.status.>``: every task transition (the whole record: tool, principal,
  status, attempts, worker);
- ``PREFIX.audit.>``: events published for the audit trail alone by the gateways
  (``gateway.audit``): every tool call (``CallAuditEvent``, arguments redacted per ``[audit]``)
  and every request refused for who sent it (``AuthFailureEvent``).

Nothing publishes twice for the audit: the stream listens to the subjects the system already
uses, so an event cannot be on the bus and missing from the trail. Retention is by age
(``AUDIT_RETENTION_S``) and by count (``[registry] audit_max_events``), on file storage.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bus.connection import connected
from bus.options import add_common_options, run_verb
from bus.provisioning import ensure_stream
from bus.subjects import Subjects
from schemas.config import RegistrySettings, Settings
from schemas.wire import AuthFailureEvent, CallAuditEvent

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
    """The last ``limit`` audit events, oldest first: (time, subject, body)."""
    js = nc.jetstream()
    name = subjects.audit_stream
    info = await js.stream_info(name)
    last = info.state.last_seq or 0
    if last == 0:
        return []
    first = max(info.state.first_seq or 1, last - limit + 1)
    events = []
    for seq in range(first, last + 1):
        try:
            msg = await js.get_msg(name, seq)
        except NotFoundError:
            continue  # aged out meanwhile
        when = msg.time or datetime.now(UTC)
        try:
            body = json.loads(msg.data or b"")
        except ValueError:
            body = {"raw": (msg.data or b"").decode("utf-8", "replace")}
        events.append((when, msg.subject or "", body))
    return events


def summary(subject: str, body: dict[str, Any], prefix: str) -> str:
    """One readable line for an audit event."""
    kind = subject.removeprefix(f"{prefix}.")
    if kind.startswith("tasks.status."):
        return (
            f"task {body.get('taskId', '?')} {body.get('tool', '?')} → {body.get('status', '?')}"
            f" ({body.get('statusMessage', '')}) principal={body.get('principal', '?')}"
        )
    if kind.startswith("audit."):
        line = _gateway_summary(kind, body)
        if line is not None:
            return line
    if kind.startswith("events."):
        fields = " ".join(f"{k}={v}" for k, v in body.items() if k not in ("kind", "at") and v)
        return f"{body.get('kind', kind)} {fields}"
    return f"{kind} {json.dumps(body, separators=(',', ':'))[:200]}"


def _gateway_summary(kind: str, body: dict[str, Any]) -> str | None:
    """The line of a gateway's audit event (``gateway.audit``), or None if it is not one."""
    try:
        if kind.startswith("audit.call."):
            call = msgspec.convert(body, CallAuditEvent)
            parts = [
                f"call {call.tool} → {call.outcome}",
                f"principal={call.principal} ({call.auth_method})",
                f"{call.duration_ms:.1f}ms era={call.era} request={call.request_id}",
            ]
            if call.trace_id:
                parts.append(f"trace={call.trace_id}")
            if call.error:
                parts.append(f"error={call.error!r}")
            if call.arguments is not msgspec.UNSET:
                parts.append(f"arguments={json.dumps(call.arguments, separators=(',', ':'))[:200]}")
            return " ".join(parts)
        if kind.startswith("audit.auth."):
            refused = msgspec.convert(body, AuthFailureEvent)
            fields = {
                "subject": refused.subject,
                "auth": refused.auth_method,
                "remote": refused.remote,
                "method": refused.method,
                "tool": refused.tool,
                "repeated": refused.repeated,
            }
            parts = [f"refused {refused.reason} ({refused.status})", *(f"{k}={v}" for k, v in fields.items() if v)]
            if refused.detail:
                parts.append(repr(refused.detail))
            return " ".join(parts)
    except msgspec.ValidationError:
        return None
    return None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` verb."""
    parser = subparsers.add_parser("audit", help="print recent audit events: calls, refusals, releases, tasks")
    add_common_options(parser)
    parser.add_argument("--limit", type=int, default=50, help="how many events (default 50)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=lambda args: run_verb(args, _print))


async def _print(settings: Settings, args: argparse.Namespace) -> int:
    subjects = Subjects(settings.nats.prefix)
    async with connected(settings.nats, name="toolbus-audit") as nc:
        try:
            events = await recent(nc, subjects, args.limit)
        except NotFoundError:
            print(f"toolbus: no audit stream {subjects.audit_stream} (is a registry running?)", file=sys.stderr)
            return 1
        except nats.errors.Error as exc:  # e.g. a user without access to the stream: the server does not answer
            print(f"toolbus: cannot read the audit stream {subjects.audit_stream}: {exc!r}", file=sys.stderr)
            return 1
    for when, subject, body in events:
        if args.json:
            print(json.dumps({"time": when.isoformat(), "subject": subject, "event": body}))
        else:
            print(f"{when.strftime('%Y-%m-%d %H:%M:%S')}  {summary(subject, body, subjects.prefix)}")
    return 0
