"""The route table: which loaded component serves each tool, found with one lookup per call.

A *source* is what brought tools to the worker: a configured component or a published package.
Its tools are added, swapped and dropped together, and two sources never serve the same tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from schemas.config import INLINE_MAX_TIMEOUT_S, LimitsSettings
from schemas.validation import ArgumentValidator, compile_validator
from schemas.wire import CallToolResult, ToolDescriptor
from workers.discovery import ToolStats
from workers.sandbox import CallContext


class CallableComponent(Protocol):
    """What the service needs from a loaded component (see ``workers.sandbox``)."""

    @property
    def name(self) -> str: ...

    @property
    def tools(self) -> Sequence[ToolDescriptor]: ...

    @property
    def limits(self) -> LimitsSettings: ...

    def call(
        self, tool_name: str, arguments: dict[str, object], timeout_s: float, context: CallContext | None = None
    ) -> CallToolResult: ...


@dataclass(frozen=True, slots=True)
class Route:
    """Everything a call to one tool needs, found with one lookup."""

    component: CallableComponent
    validator: ArgumentValidator
    stats: ToolStats
    max_concurrency: int | None
    """Calls of this tool a worker holds at once (running or waiting for a thread)."""
    inline: bool = False
    """The tool declares its calls short: they run on the event loop (``LimitsSettings.inline``)."""
    asks: bool = False
    """The tool may ask its client (its component imports ``toolbus:mcp/client``)."""


class Routes:
    """Tool → its route, and source → the names of its tools."""

    def __init__(self) -> None:
        self.by_tool: dict[str, Route] = {}
        """Tool → its route; the one dict the call path reads (mutated in place, never replaced)."""
        self._tools: dict[str, ToolDescriptor] = {}
        self._sources: dict[str, list[str]] = {}
        """Source (a configured component or a published package) → the names of its tools."""

    @property
    def tools(self) -> list[ToolDescriptor]:
        """The descriptors of every tool served."""
        return list(self._tools.values())

    def stats(self) -> dict[str, ToolStats]:
        """Tool → its STATS counters."""
        return {name: route.stats for name, route in self.by_tool.items()}

    def add(self, source: str, component: CallableComponent, tools: Sequence[ToolDescriptor]) -> None:
        """Route ``tools`` to ``component`` as ``source``.

        Raises:
            ValueError: ``source`` is already known, or another source serves one of ``tools``.
        """
        if source in self._sources:
            raise ValueError(f"two components are named {source!r}")
        for tool in tools:
            if tool.name in self.by_tool:
                raise ValueError(f"tool {tool.name!r} is exported by two components")
        limits = component.limits
        # Checked again here: limits merged from the worker's and a component's skip the model's check.
        inline = limits.inline and limits.timeout_s <= INLINE_MAX_TIMEOUT_S
        for tool in tools:
            self.by_tool[tool.name] = Route(
                component, compile_validator(tool.input_schema), ToolStats(), limits.max_concurrency, inline, tool.asks
            )
            self._tools[tool.name] = tool
        self._sources[source] = [tool.name for tool in tools]

    def replace(self, source: str, component: CallableComponent, tools: Sequence[ToolDescriptor]) -> list[str]:
        """Route ``source``'s tools to ``component`` instead; return the tools no longer served.

        The table is unchanged when this raises.

        Raises:
            ValueError: another source serves one of ``tools``.
        """
        old = self._sources.pop(source, [])
        previous = {name: (self.by_tool.pop(name), self._tools.pop(name)) for name in old}
        try:
            self.add(source, component, tools)
        except ValueError:
            for name, (route, tool) in previous.items():
                self.by_tool[name], self._tools[name] = route, tool
            self._sources[source] = old
            raise
        return [name for name in old if name not in self.by_tool]

    def pop_source(self, source: str) -> list[str]:
        """Forget ``source``; return its tools' names, which stay routed until each is ``drop``-ped."""
        # Two steps, so the service can drop one tool at a time while it drains that tool's calls.
        return self._sources.pop(source, [])

    def drop(self, name: str) -> None:
        """Stop routing the tool ``name``."""
        self.by_tool.pop(name, None)
        self._tools.pop(name, None)
