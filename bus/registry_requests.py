"""Requests to the registry as every client sends them: a release verb, and the tool list page by page.

One copy for the CLI (``toolbus publish|rollback|versions|tools``), the operator console and the
gateway's start-up readiness; the registry answers them (``registry.releases``,
``registry.service``). Here, below the roles, because the gateway may not import the CLI or the
registry (tests/test_layering.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient

from bus.connection import send_request
from bus.errors import BusTimeout, NoResponders
from bus.subjects import Header, Subjects
from schemas.codec import DecodeError, decode, encode
from schemas.wire import ErrorReply, ReleaseReply, ToolList, ToolListRequest

RELEASE_TIMEOUT_S = 180.0
"""A publish loads and checks the component on a worker first (minutes for a large one, cold)."""


class RegistryRefused(Exception):
    """Raised when no registry answered, or it refused or answered unreadably; the message says which."""


async def release(nc: NatsClient, subject: str, body: bytes, *, timeout_s: float = RELEASE_TIMEOUT_S) -> ReleaseReply:
    """Send one release request (``Subjects.registry_release(verb)``) and decode its reply.

    Raises:
        RegistryRefused: no registry answered in time, or it refused (its message says why).
        BusError: the bus itself failed (not connected, permission refused, ...).
    """
    try:
        reply = await send_request(nc, subject, body, timeout_s=timeout_s)
    except (NoResponders, BusTimeout):
        raise RegistryRefused(f"no registry is answering on {subject}") from None
    try:
        if reply.headers and Header.ERROR in reply.headers:
            raise RegistryRefused(decode(reply.data, ErrorReply).error.message)
        return decode(reply.data, ReleaseReply)
    except DecodeError as exc:
        raise RegistryRefused(f"the registry's reply on {subject} is not readable ({exc})") from None


async def tool_pages(nc: NatsClient, subjects: Subjects, *, timeout_s: float) -> AsyncIterator[ToolList]:
    """The registry's tool list (with live workers per tool), one page at a time.

    Raises:
        RegistryRefused: no registry answered in time, or a page is not readable.
        BusError: the bus itself failed.
    """
    cursor: str | None = None
    while True:
        try:
            reply = await send_request(
                nc, subjects.registry_list, encode(ToolListRequest(cursor=cursor)), timeout_s=timeout_s
            )
            page = decode(reply.data, ToolList)
        except (NoResponders, BusTimeout):
            raise RegistryRefused(f"no registry is answering on {subjects.registry_list}") from None
        except DecodeError as exc:
            raise RegistryRefused(f"the registry's tool list is not readable ({exc})") from None
        yield page
        if not page.next_cursor:
            return
        cursor = page.next_cursor
