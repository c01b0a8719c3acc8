"""SDK-path ``tools/list`` handler cost on a 100-tool page, against validating every tool per request.

The SDK handler (``gateway.server.ToolFrontend.list_tools``) serves each tool's ``types.Tool``
model, validated once per catalogue entry and era (``gateway.server.sdk_tool``). The baseline,
measured in the same run, is what the handler did before: ``types.Tool.model_validate`` of every
tool's JSON on every request. In-process, no event loop (the handler awaits nothing).

Run: ``.venv/bin/python -m bench.sdk_tools_list``
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import mcp.types as types

from bench.stats import per_call_us, run_unsuspended
from bench.tools_list import descriptor
from gateway.catalogue_mirror import CatalogueMirror
from gateway.server import ToolFrontend
from gateway.tool_service import ToolService

TOOLS = 100
NUMBER = 300
REPEAT = 15


def _per_call_us(call: Callable[[], object]) -> float:
    return per_call_us(call, number=NUMBER, repeat=REPEAT)  # the untimed first call fills the per-entry cache


def main() -> None:
    catalogue = CatalogueMirror()
    catalogue.replace(descriptor(i) for i in range(TOOLS))
    frontend = ToolFrontend(ToolService(catalogue, page_size=TOOLS))
    entries = [catalogue.get(name) for name in catalogue.names()]
    print(f"tools/list, one page of {TOOLS} tools, median of {REPEAT} x {NUMBER} calls:")
    for era, modern in (("2025-11-25", False), ("2026-07-28", True)):
        ctx = SimpleNamespace(protocol_version=era, request=None)  # no HTTP request: anonymous
        now = _per_call_us(lambda ctx=ctx: run_unsuspended(frontend.list_tools(ctx, None)))  # type: ignore[misc]
        baseline = _per_call_us(
            lambda modern=modern: [
                types.Tool.model_validate(e.modern_tool if modern else e.legacy_tool) for e in entries if e
            ]
        )
        print(f"  {era}: validate every tool (baseline) {baseline:7.1f} us   handler now {now:6.1f} us")


if __name__ == "__main__":
    main()
