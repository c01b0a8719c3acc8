"""The MCP tasks extension's conformance tools (SEP-2663), as guests see toolbus.

Built with componentize-py against wit/tasks.wit (world `tasks`); examples/toolbus.toml serves it
with `prefix = ""`, so the tools are named after their exports, as the scenarios call them.
"""

import time

import wit_world
from componentize_py_types import Err
from wit_world.imports import context

STEP_S = 0.1
"""How often a sleeping tool looks at `context.cancelled()`: a guest blocked in a host call is
stopped only when that call returns, so long sleeps are cut into short ones."""


class WitWorld(wit_world.WitWorld):
    def greet(self, name: str) -> str:
        return f"Hello, {name}!"

    def slow_compute(self, seconds: float, label: str | None) -> str:
        deadline = time.monotonic() + max(seconds, 0.0)
        while time.monotonic() < deadline and not context.cancelled():
            time.sleep(min(STEP_S, max(deadline - time.monotonic(), 0.0)))
        return f"Computed {label or 'result'} after {seconds:g} s"

    def failing_job(self) -> str:
        time.sleep(1.0)
        raise Err("failing_job failed on purpose: a tool-execution error")

    def protocol_error_job(self) -> str:
        raise RuntimeError("protocol_error_job crashed on purpose")
