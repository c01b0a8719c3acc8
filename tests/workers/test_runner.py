"""The worker process's start: announced at once, each component served as it loads, and a
component that cannot load stops the worker with its name (having drained what it served)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from schemas.codec import decode
from schemas.config import load_settings
from schemas.wire import WorkerAnnouncement
from tests.workers.conftest import EXAMPLES_DIR
from workers.errors import WorkersError
from workers.runner import serve


async def test_a_component_that_cannot_load_stops_the_worker_naming_it(
    nats_server: EmbeddedNatsServer, nc: NatsClient, subjects: Subjects, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.wat"
    broken.write_text("(component (func $unfinished", encoding="utf-8")
    settings = load_settings(
        None,
        nats={"url": nats_server.url, "prefix": subjects.prefix},
        cache_dir=str(tmp_path / "cache"),
        components=[
            {
                "name": "echo",
                "kind": "command",
                "path": str(EXAMPLES_DIR / "wat" / "echo.wat"),
                "input_schema": {"type": "object"},
            },
            {"name": "broken", "path": str(broken)},
        ],
    )
    heard: list[WorkerAnnouncement] = []

    async def on_announce(msg: Msg) -> None:
        heard.append(decode(msg.data, WorkerAnnouncement))

    await nc.subscribe(subjects.announce, cb=on_announce)
    await nc.flush()
    with pytest.raises(WorkersError, match=r"broken\.wat.*not valid WAT"):
        await serve(settings)
    await nc.flush()
    # Announced before anything was loaded, naming what it was loading; stopped at the end.
    assert heard[0].state == "ready" and heard[0].tools == [] and heard[0].loading == ["echo", "broken"]
    assert heard[-1].state == "stopped"
    assert all("broken" in a.loading for a in heard if a.state == "ready")
