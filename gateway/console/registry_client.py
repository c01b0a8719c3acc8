"""The console's requests to the registry: the release verbs and the tool list with live workers.

The release verbs are the registry's (``registry.releases``), the very requests ``toolbus
rollback|deprecate|retire|versions`` send (``cli.releases``): the same ``ReleaseRequest`` on the
same subject, answered by the same handler, so the console has no release logic of its own —
only this client of ``bus.registry_requests``, which the CLI sends through too.
"""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client as NatsClient

from bus import registry_requests
from bus.errors import BusError
from bus.registry_requests import RegistryRefused
from bus.subjects import RELEASE_VERBS, Subjects
from schemas.codec import encode
from schemas.wire import ReleaseReply, ReleaseRequest

RELEASE_TIMEOUT_S: Final = 30.0
"""A rollback, deprecate or retire is a few KV writes; no Wasm is compiled (unlike publish)."""
LIST_TIMEOUT_S: Final = 5.0
CONSOLE_VERBS: Final = frozenset({"rollback", "deprecate", "retire", "versions"})
"""The release verbs the console sends (publishing needs the artifact: the CLI's job)."""


async def release(nc: NatsClient, subjects: Subjects, verb: str, request: ReleaseRequest) -> ReleaseReply:
    """Send release verb ``verb`` and return the package's versions after it.

    Raises:
        RegistryRefused: the registry refused (its message), none answered, or the bus failed.
    """
    assert verb in CONSOLE_VERBS and verb in RELEASE_VERBS
    try:
        return await registry_requests.release(
            nc, subjects.registry_release(verb), encode(request), timeout_s=RELEASE_TIMEOUT_S
        )
    except BusError as exc:
        raise RegistryRefused(f"{verb}: the bus refused the request ({exc})") from None


async def live_workers(nc: NatsClient, subjects: Subjects) -> dict[str, int]:
    """Tool name → live workers serving it, as the registry counts them (``toolbus tools``).

    {} when no registry answers: the page shows "?" for each tool.
    """
    live: dict[str, int] = {}
    try:
        async for page in registry_requests.tool_pages(nc, subjects, timeout_s=LIST_TIMEOUT_S):
            live.update(page.live_workers)
    except (RegistryRefused, BusError):
        pass  # the page shows what it has; the registry's absence is visible on the workers page
    return live
