"""``toolbus audit``: print recent events of the audit trail (``registry.audit_stream``), one readable line each."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from bus.connection import connected
from bus.errors import BusError, NotFound
from bus.subjects import Subjects
from cli.options import add_common_options, run_verb
from registry.audit_stream import recent
from schemas.config import Settings
from schemas.wire import AuthFailureEvent, CallAuditEvent, ConsoleActionEvent


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
    """The line of a gateway's audit event (``gateway.audit_trail``), or None if it is not one."""
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
        if kind.startswith("audit.console."):
            action = msgspec.convert(body, ConsoleActionEvent)
            line = f"console {action.action} {action.target} → {action.outcome} principal={action.principal}"
            return line + (f" {action.detail!r}" if action.detail else "")
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
        except NotFound:
            print(f"toolbus: no audit stream {subjects.audit_stream} (is a registry running?)", file=sys.stderr)
            return 1
        except BusError as exc:  # e.g. a user without access to the stream: the server does not answer
            print(f"toolbus: cannot read the audit stream {subjects.audit_stream}: {exc!r}", file=sys.stderr)
            return 1
    for when, subject, body in events:
        if args.json:
            print(json.dumps({"time": when.isoformat(), "subject": subject, "event": body}))
        else:
            print(f"{when.strftime('%Y-%m-%d %H:%M:%S')}  {summary(subject, body, subjects.prefix)}")
    return 0
