"""``toolbus:mcp/notify``: notifications a guest sends every interested client, not only its caller.

A guest calls ``resource-updated(uri)`` when a resource it serves changed; the worker publishes a
``ResourceUpdated`` on the bus (``Subjects.resource_updated``) and every gateway relays it as
``notifications/resources/updated`` to the clients subscribed to that URI. The sandbox knows
nothing of NATS: the worker installs the publisher (``set_publisher``) when it starts; before
that (the load-time checks), a notification goes nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from workers.sandbox.call_context import current

NOTIFY_INTERFACE: Final = "toolbus:mcp/notify@0.1.0"
MAX_URI_CHARS: Final = 2048
"""Longer URIs are dropped: no client would match them, and they would cost every gateway."""
MAX_UPDATES_PER_RUN: Final = 64
"""Notifications one run of a guest (a call, a read, a get) may send; later ones are dropped.
Each is a bus message to every gateway, relayed to every subscriber, and waits in the worker's
outbox ahead of other calls' replies: a guest in a loop must not turn into a flood."""

Publisher = Callable[[str, str], None]
"""Told (component, uri) from a guest thread; must be thread-safe and must not block."""

_publisher: Publisher | None = None


def set_publisher(publisher: Publisher | None) -> None:
    """Where guests' notifications go from now on (the worker's bus side; ``None``: nowhere)."""
    global _publisher
    _publisher = publisher


def link_notify(linker: Any, component: str) -> None:
    """Define ``toolbus:mcp/notify`` in ``component``'s linker (its notifications name it)."""

    def resource_updated(_store: Any, uri: str) -> None:
        publisher, context = _publisher, current()
        if publisher is None or context is None or not 0 < len(uri) <= MAX_URI_CHARS:
            return
        if context.updates_sent < MAX_UPDATES_PER_RUN:
            context.updates_sent += 1
            publisher(component, uri)

    with linker.root() as root, root.add_instance(NOTIFY_INTERFACE) as instance:
        instance.add_func("resource-updated", resource_updated)
