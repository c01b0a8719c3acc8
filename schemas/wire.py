"""Wire types: every message that crosses the bus, as frozen msgspec Structs.

Fields are added with defaults, never renamed or removed; a breaking change gets a new type.
Names that MCP fixes (``isError``, ``structuredContent``, ``inputSchema``…) are camelCase on
the wire so a CallToolResult from a worker is the MCP JSON as-is.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

UNSET = msgspec.UNSET
"""Marker for an absent optional field (omitted on the wire rather than sent as null)."""

JsonSchema = dict[str, Any]
"""A JSON Schema document. Free-form by nature, so it stays a mapping inside the Structs."""


class TextContent(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    """MCP text content block."""

    text: str


class ImageContent(msgspec.Struct, frozen=True, tag_field="type", tag="image", rename="camel"):
    """MCP image content block (base64 data)."""

    data: str
    mime_type: str


class AudioContent(msgspec.Struct, frozen=True, tag_field="type", tag="audio", rename="camel"):
    """MCP audio content block (base64 data)."""

    data: str
    mime_type: str


Content = TextContent | ImageContent | AudioContent


class CallToolResult(msgspec.Struct, frozen=True, rename="camel"):
    """The MCP ``CallToolResult``: what a worker replies to a call, byte for byte.

    ``isError`` is always written (as the SDK does); absent ``structuredContent`` is omitted.
    """

    content: list[Content]
    structured_content: Any | msgspec.UnsetType = UNSET
    is_error: bool = False


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """A typed protocol failure: a stable code from ``ErrorCode`` and a readable message."""

    code: int
    message: str
    retryable: bool = False


class ErrorReply(msgspec.Struct, frozen=True):
    """The reply body of a failed request; its code is also in the ``Toolbus-Error`` header."""

    error: ErrorBody


class ToolDescriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One tool as the catalogue knows it: MCP fields plus where it comes from."""

    name: str
    description: str = ""
    input_schema: JsonSchema
    output_schema: JsonSchema | None = None
    component: str = ""
    """Name of the component (from config) that exports the function."""
    export: str = ""
    """Path of the exported function inside the component, e.g. ``add`` or ``math/add``."""
    digest: str = ""
    """``sha256:<hex>`` of the Wasm bytes the tool runs."""
    version: str = ""
    """Tool version; empty until the registry assigns versions."""


class WorkerAnnouncement(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A worker telling the registry what it serves (sent at start and re-sent periodically)."""

    worker_id: str
    tools: list[ToolDescriptor]
    concurrency: int = 1
    in_flight: int = 0
    state: Literal["ready", "draining", "stopped"] = "ready"


class ToolList(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """Reply of the registry's list request: one page of tools."""

    tools: list[ToolDescriptor]
    next_cursor: str | None = None


class ToolListRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """Body of the registry's list request (an empty body means the first page)."""

    cursor: str | None = None
    limit: int = 1000


class ToolGetRequest(msgspec.Struct, frozen=True):
    """Body of the registry's get request."""

    name: str
