"""The console's requests to the registry: the release verbs and the tool list with live workers.

The release verbs are the registry's (``registry.releases``), the very requests ``toolbus
rollback|deprecate|retire|versions`` send (``cli.releases``): the same ``ReleaseRequest`` on the
same subject, answered by the same handler, so the console has no release logic of its own —
only this client, since the gateway may not import the CLI or the registry (tests/test_layering.py).
"""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client as NatsClient

from bus.connection import send_request
from bus.errors import BusError, BusTimeout, NoResponders
from bus.subjects import RELEASE_VERBS, Header, Subjects
from schemas.codec import DecodeError, decode, encode
from schemas.wire import ErrorReply, ReleaseReply, ReleaseRequest, ToolList, ToolListRequest

RELEASE_TIMEOUT_S: Final = 30.0
"""A rollback, deprecate or retire is a few KV writes; no Wasm is compiled (unlike publish)."""
LIST_TIMEOUT_S: Final = 5.0
CONSOLE_VERBS: Final = frozenset({"rollback", "deprecate", "retire", "versions"})
"""The release verbs the console sends (publishing needs the artifact: the CLI's job)."""


class RegistryRefused(Exception):
    """Raised when the registry refused a request or did not answer; the message says which and why."""


async def release(nc: NatsClient, subjects: Subjects, verb: str, request: ReleaseRequest) -> ReleaseReply:
    """Send release verb ``verb`` and return the package's versions after it.

    Raises:
        RegistryRefused: the registry refused (its message), or none answered.
    """
    assert verb in CONSOLE_VERBS and verb in RELEASE_VERBS
    subject = subjects.registry_release(verb)
    try:
        reply = await send_request(nc, subject, encode(request), timeout_s=RELEASE_TIMEOUT_S)
    except (NoResponders, BusTimeout):
        raise RegistryRefused(f"no registry is answering on {subject}") from None
    except BusError as exc:
        raise RegistryRefused(f"{verb}: the bus refused the request ({exc})") from None
    try:
        if reply.headers and Header.ERROR in reply.headers:
            raise RegistryRefused(decode(reply.data, ErrorReply).error.message)
        return decode(reply.data, ReleaseReply)
    except DecodeError as exc:
        raise RegistryRefused(f"{verb}: the registry's reply is not readable ({exc})") from None


async def live_workers(nc: NatsClient, subjects: Subjects) -> dict[str, int]:
    """Tool name → live workers serving it, as the registry counts them (``toolbus tools``).

    {} when no registry answers: the page shows "?" for each tool.
    """
    live: dict[str, int] = {}
    cursor: str | None = None
    try:
        while True:
            body = encode(ToolListRequest(cursor=cursor))
            reply = await send_request(nc, subjects.registry_list, body, timeout_s=LIST_TIMEOUT_S)
            page = decode(reply.data, ToolList)
            live.update(page.live_workers)
            cursor = page.next_cursor
            if not cursor:
                return live
    except (BusError, DecodeError):
        return live  # the page shows what it has; the registry's absence is visible on the workers page
