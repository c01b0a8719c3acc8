"""MCP features for guests: the ``toolbus:mcp/context`` host interface.

A guest that imports it (``schemas/wit/toolbus-mcp/mcp.wit``) can report progress, log, ask
whether its call was cancelled, and add rich content (text, images, audio, embedded resources)
to its result. Each function acts on the call running on the calling thread
(``workers.sandbox.call_context.current``); outside a call (the load-time trial instantiation) they do
nothing. Linked into every component's linker: it grants nothing a caller did not ask for.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from schemas.wire import (
    AudioContent,
    Content,
    EmbeddedResource,
    ImageContent,
    ResourceContents,
    TextContent,
)
from workers.sandbox.call_context import current

MCP_INTERFACE = "toolbus:mcp/context@0.1.0"
MAX_CONTENT_BLOCKS = 256
"""Blocks one call may add; more are dropped (and the guest's memory bounds their size)."""


def _report_progress(_store: Any, progress: float, total: float | None, message: str | None) -> None:
    context = current()
    if context is not None and math.isfinite(progress):
        context.progress(progress, total if total is not None and math.isfinite(total) else None, message)


def _log(_store: Any, level: str, message: str) -> None:
    context = current()
    if context is not None:
        context.log(level, message)


def _cancelled(_store: Any) -> bool:
    context = current()
    return context is not None and context.cancelled.is_set()


def _add_content(_store: Any, block: Any) -> None:
    context = current()
    if context is not None and len(context.content) < MAX_CONTENT_BLOCKS:
        context.content.append(content_block(block))


def content_block(block: Any) -> Content:
    """The MCP content block for a ``content-block`` value (a wasmtime ``Variant``)."""
    tag, payload = block.tag, block.payload
    if tag == "text":
        return TextContent(payload)
    if tag in ("image", "audio"):
        data = base64.b64encode(bytes(payload.data)).decode("ascii")
        mime_type = getattr(payload, "mime-type")
        return ImageContent(data, mime_type) if tag == "image" else AudioContent(data, mime_type)
    blob = payload.blob
    return EmbeddedResource(
        ResourceContents(
            uri=payload.uri,
            mime_type=getattr(payload, "mime-type"),
            text=payload.text,
            blob=base64.b64encode(bytes(blob)).decode("ascii") if blob is not None else None,
        )
    )


def link_mcp(linker: Any) -> None:
    """Define ``toolbus:mcp/context`` in a component linker."""
    with linker.root() as root, root.add_instance(MCP_INTERFACE) as instance:
        instance.add_func("report-progress", _report_progress)
        instance.add_func("log", _log)
        instance.add_func("cancelled", _cancelled)
        instance.add_func("add-content", _add_content)
