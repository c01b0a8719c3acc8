"""The audit stream against a real nats-server: releases and task transitions land in the audit
stream as they happen, and ``toolbus audit`` prints them."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from registry.audit_stream import recent
from registry.service import RegistryService
from schemas.codec import encode
from schemas.config import RegistrySettings
from schemas.wire import RegistryEvent
from stores import TaskStore
from tests.conftest import TEST_ANNOUNCE_INTERVAL_S, eventually, nats_settings, toolbus


async def test_events_and_task_transitions_are_kept_and_printed(
    nc: NatsClient, subjects: Subjects, nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    registry = RegistryService(
        nc, subjects, RegistrySettings(audit_max_events=64_000), announce_interval_s=TEST_ANNOUNCE_INTERVAL_S
    )
    await registry.start()  # creates the audit stream
    try:
        # Capped by count as well as by age: it holds one event per tool call.
        config = (await nc.jetstream().stream_info(subjects.audit_stream)).config
        assert (config.max_msgs, config.max_age) == (64_000, 30 * 24 * 3600)
        await nc.publish(
            subjects.event("published"), encode(RegistryEvent(kind="published", name="pkg", version="1.0.0"))
        )
        store = await TaskStore.open(nc, subjects)
        task = await store.submit("kit_add", {"a": 1}, principal="alice")
        await store.cancel(task.task_id, principal="alice")

        async def three_events() -> list[tuple[datetime, str, dict[str, Any]]] | None:
            found = await recent(nc, subjects, 10)
            return found if len(found) >= 3 else None

        events = await eventually(three_events, what="the audit stream never held the three events")
        kinds = [
            (subject.removeprefix(subjects.prefix + "."), body.get("status") or body.get("kind"))
            for _, subject, body in events
        ]
        assert kinds == [
            ("events.published", "published"),
            (f"tasks.status.{task.task_id}", "working"),
            (f"tasks.status.{task.task_id}", "cancelled"),
        ]
        settings = nats_settings(tmp_path, nats_server.url, subjects.prefix)
        printed = await asyncio.to_thread(toolbus, "audit", "--config", str(settings))
        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.splitlines()
        assert "published name=pkg version=1.0.0" in lines[0]
        assert f"task {task.task_id} kit_add → cancelled (cancelled by the client) principal=alice" in lines[2]
    finally:
        await registry.stop()
