"""How a failed guest call reads: the limit it hit, else the trap, plus its stderr tail."""

from __future__ import annotations

import re

from schemas.config import LimitsSettings
from schemas.wire import CallToolResult, TextContent
from workers.sandbox.guest_output import STDERR_LIMIT_BYTES, TailBuffer
from workers.sandbox.limits import describe_limit_hit


def error_result(message: str) -> CallToolResult:
    """A tool-execution error result carrying ``message``."""
    return CallToolResult(content=[TextContent(message)], is_error=True)


def root_cause(text: str) -> str:
    """The root cause of a wasmtime error: the last line after ``Caused by:``."""
    _, _, causes = text.rpartition("Caused by:")
    lines = [line.strip() for line in (causes or text).strip().splitlines() if line.strip()]
    cause = lines[-1] if lines else text.strip()
    return re.sub(r"^\d+:\s*", "", cause)


def describe_trap(exc: Exception, timeout_s: float, *, limits: LimitsSettings, stderr: TailBuffer) -> str:
    """A readable reason for a failed call: the limit it hit, else the guest's trap.

    ``exc`` is the wasmtime error (a component's ``WasmtimeError`` or a core module's ``Trap``:
    only its message is read, which has the same form for both).
    """
    cause = root_cause(str(exc))
    reason = describe_limit_hit(cause, stderr.text(), limits, timeout_s)
    if reason is not None:
        return reason
    return f"guest trapped: {cause.removeprefix('wasm trap: ')}"


def with_stderr(message: str, stderr: TailBuffer) -> str:
    """``message`` followed by the tail of the guest's stderr, if it wrote any."""
    tail = stderr.text(last=STDERR_LIMIT_BYTES)
    return f"{message}\nstderr:\n{tail}" if tail else message
