"""The per-call log line, batched off the call path: every call still gets its line."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import msgspec
import pytest
import structlog

from bus.log_lines import FLUSH_AFTER_S
from cli.logs import configure_logging
from gateway.call_log import CallLog
from gateway.principals import ANONYMOUS, Principal
from gateway.tool_service import CallRecord


@pytest.fixture
def json_logs() -> Iterator[None]:
    configure_logging("json")
    yield
    structlog.reset_defaults()


def record(i: int, *, error: str | None = None) -> CallRecord:
    return CallRecord(
        tool="kit_add",
        principal=ANONYMOUS,
        era="2026-07-28",
        request_id=f"r{i}",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" if i == 0 else None,
        arguments={"a": i},
        outcome="ok" if error is None else "no_worker",
        error=error,
        started_at=time.time(),
        duration_s=0.0021,
    )


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_calls_are_logged_together_after_the_call_not_during_it(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    call_log = CallLog()
    for i in range(3):
        call_log.observe(record(i, error="boom" if i == 2 else None))
    assert capsys.readouterr().err == ""  # nothing written on the call's path
    await asyncio.sleep(FLUSH_AFTER_S * 4)
    written = lines(capsys.readouterr().err)
    assert [line["request_id"] for line in written] == ["r0", "r1", "r2"]
    first = written[0]
    assert (first["event"], first["level"], first["tool"], first["outcome"]) == ("call", "info", "kit_add", "ok")
    assert (first["duration_ms"], first["principal"], first["era"]) == (2.1, "anonymous", "2026-07-28")
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert str(first["timestamp"]).endswith("Z")
    assert "error" not in first and written[2]["error"] == "boom"


async def test_close_writes_what_is_left(json_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    call_log = CallLog()
    call_log.observe(record(7))
    call_log.close()
    assert [line["request_id"] for line in lines(capsys.readouterr().err)] == ["r7"]
    await asyncio.sleep(FLUSH_AFTER_S * 2)  # the timer was cancelled: nothing twice
    assert capsys.readouterr().err == ""


async def test_what_a_client_chose_cannot_forge_or_split_a_line(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # The error text can carry what a client sent (a guest echoing its arguments, a token's
    # subject): newlines, a fake JSON line, terminal escapes. Each call is still one line.
    forged = '\n{"event":"call","tool":"admin","outcome":"ok"}\r\n\x1b[2J'
    call_log = CallLog()
    call_log.observe(record(1, error=forged))
    call_log.observe(msgspec.structs.replace(record(2), principal=Principal(subject=f"jwt:x#{forged}")))
    call_log.close()
    out = capsys.readouterr().err
    assert len(out.splitlines()) == 2
    first, second = lines(out)
    assert first["error"] == forged and str(second["principal"]).endswith(forged)
    assert "\x1b" not in out  # escaped by the encoder, not written raw to a terminal
