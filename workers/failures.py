"""How a failed guest call reads: the limit it hit, else the trap, plus its stderr tail."""

from __future__ import annotations

import re

import wasmtime

from schemas.config import LimitsSettings
from schemas.wire import CallToolResult, TextContent
from workers.guest_output import STDERR_LIMIT_BYTES, TailBuffer
from workers.interrupts import CANCELLED, TIMED_OUT
from workers.limits import describe_limit_hit


def error_result(message: str) -> CallToolResult:
    """A tool-execution error result carrying ``message``."""
    return CallToolResult(content=[TextContent(message)], is_error=True)


def root_cause(text: str) -> str:
    """The root cause of a wasmtime error: the last line after ``Caused by:``."""
    _, _, causes = text.rpartition("Caused by:")
    lines = [line.strip() for line in (causes or text).strip().splitlines() if line.strip()]
    cause = lines[-1] if lines else text.strip()
    return re.sub(r"^\d+:\s*", "", cause)


def describe_trap(
    exc: wasmtime.WasmtimeError,
    timeout_s: float,
    *,
    limits: LimitsSettings | None = None,
    stderr: TailBuffer | None = None,
) -> str:
    """A readable reason for a failed call: the limit it hit, else the guest's trap."""
    cause = root_cause(str(exc))
    if limits is not None:
        reason = describe_limit_hit(cause, stderr.text() if stderr else "", limits, timeout_s)
        if reason is not None:
            return reason
    elif cause == TIMED_OUT or cause.endswith("wasm trap: interrupt"):
        return f"timed out after {timeout_s:g}s"
    elif cause == CANCELLED:
        return "cancelled"
    elif "all fuel consumed" in cause:
        return "ran out of fuel"
    return f"guest trapped: {cause.removeprefix('wasm trap: ')}"


def with_stderr(message: str, stderr: TailBuffer) -> str:
    """``message`` followed by the tail of the guest's stderr, if it wrote any."""
    tail = stderr.text(last=STDERR_LIMIT_BYTES)
    return f"{message}\nstderr:\n{tail}" if tail else message
