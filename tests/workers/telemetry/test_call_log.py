"""The per-call log line, written in batches: every call has its line, as structlog would write it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import pytest
import structlog
from nats.aio.client import Client as NatsClient

from bus.subjects import Header, Subjects
from cli.logs import configure_logging
from tests.conftest import eventually
from workers.answers import FinishedCall
from workers.service import WorkerService
from workers.telemetry.call_log import CallLog

CALLS = 300


@pytest.fixture
def json_logging() -> Iterator[io.StringIO]:
    """structlog configured as a worker configures it (JSON lines), writing to a buffer."""
    saved = structlog.get_config()
    configure_logging("json")
    written = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=written), cache_logger_on_first_use=False)
    yield written
    structlog.configure(**saved)


async def test_every_call_has_its_line_and_none_is_lost_at_stop(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, json_logging: io.StringIO
) -> None:
    stream = io.StringIO()
    call_log = CallLog(worker.worker_id, stream=stream)
    worker.observers.append(call_log)
    requests = [
        nc.request(
            subjects.call("kit_divide" if i % 3 == 0 else "kit_add"),
            b'{"a":1,"b":0}',
            timeout=10,
            headers={Header.REQUEST_ID: f"r-{i}"},
        )
        for i in range(CALLS)
    ]
    await asyncio.gather(*requests)
    await worker.stop(grace_s=1)
    call_log.flush()  # what the worker's telemetry does once the service has drained
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert sorted(line["request_id"] for line in lines) == sorted(f"r-{i}" for i in range(CALLS))
    assert {"ok", "tool_error"} <= {line["outcome"] for line in lines}  # (and overloaded: 300 > 2 + 256)
    assert not json_logging.getvalue()  # nothing went through structlog's per-line path


async def test_lines_are_written_without_waiting_for_the_stop(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, json_logging: io.StringIO
) -> None:
    stream = io.StringIO()
    worker.observers.append(CallLog(worker.worker_id, stream=stream))
    await nc.request(subjects.call("kit_add"), b'{"a":1,"b":2}', timeout=5, headers={Header.REQUEST_ID: "soon"})
    await eventually(lambda: '"request_id":"soon"' in stream.getvalue(), what="the call's line")


def test_a_line_is_the_one_structlog_writes(json_logging: io.StringIO) -> None:
    record = FinishedCall("kit_add", "r-1", None, "tool_error", "division by zero", 0.0012345, 0.00002, "key:alice")
    ours = io.StringIO()
    call_log = CallLog("w-1", stream=ours)
    call_log(record)
    call_log.flush()
    structlog.get_logger("toolbus.calls").info("call", **call_log._fields(record))
    mine, theirs = json.loads(ours.getvalue()), json.loads(json_logging.getvalue())
    assert list(mine) == list(theirs)  # the same keys in the same order
    assert {k: v for k, v in mine.items() if k != "timestamp"} == {k: v for k, v in theirs.items() if k != "timestamp"}
    assert mine["timestamp"].endswith("Z") and mine["timestamp"][:16] == theirs["timestamp"][:16]
