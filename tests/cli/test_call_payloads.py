"""``toolbus call`` reads a result larger than one NATS message from its claim check (``bus.payloads``).

In process (the verb's coroutine with parsed options), because arguments large enough for such a
result (greet echoes its argument twice) exceed what one command-line argument may hold.
"""

from __future__ import annotations

import argparse
import json

import pytest
from nats.aio.client import Client as NatsClient

from bus.embedded import EmbeddedNatsServer
from bus.subjects import Subjects
from cli.tools import call_tool
from schemas.codec import decode
from schemas.config import WorkerSettings, load_settings
from schemas.wire import CallToolResult
from workers.sandbox.component import LoadedComponent
from workers.service import WorkerService


async def test_toolbus_call_prints_a_result_larger_than_a_message(
    nats_server: EmbeddedNatsServer,
    nc: NatsClient,
    subjects: Subjects,
    kit: LoadedComponent,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = WorkerService(nc, subjects, WorkerSettings(concurrency=1), [kit])
    await service.start()
    try:
        settings = load_settings(None, nats={"url": nats_server.url, "prefix": subjects.prefix})
        name = "x" * int(nc.max_payload * 0.7)
        options = argparse.Namespace(tool="kit_greet", arguments=json.dumps({"name": name}), timeout=10.0)
        assert await call_tool(settings, options) == 0
    finally:
        await service.stop(grace_s=1)
    [printed] = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"content"')]
    assert len(printed) > nc.max_payload
    assert decode(printed.encode(), CallToolResult).structured_content == name
