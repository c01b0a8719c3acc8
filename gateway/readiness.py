"""Whether the components in a gateway's config are served yet: the start-up part of ``/readyz``.

A gateway whose config lists ``[[components]]`` (``toolbus up`` hands every child the same
file) is ready only once each of them is served by a live worker: before that, ``tools/list``
is not the list the operator configured. A gateway with no components in its config (a
deployment's gateway, say) has nothing to wait for here.

The registry is asked, not the catalogue mirror: the tools bucket outlives a restart, so the
mirror can list a component from the last run before any worker of this run has loaded it; the
registry counts only workers that announced themselves recently (``ToolList.live_workers``).
It is asked when ``/readyz`` is probed and only until every component has been seen served:
from then on readiness says that the start-up is complete, and a worker that dies later is the
registry's business (its calls get ``NO_WORKER``), not a reason to take the gateway out of
a load balancer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final, Literal

import structlog
from nats.aio.client import Client as NatsClient

from bus.errors import BusError
from bus.registry_requests import RegistryRefused, tool_pages
from bus.subjects import Subjects

log = structlog.get_logger(__name__)

REGISTRY_TIMEOUT_S: Final = 1.0
"""A readiness probe waits this long for the registry's answer (probes time out after a few seconds)."""

ComponentState = Literal["served", "waiting"]


class ConfiguredComponents:
    """The components a gateway's config lists, and which of them a live worker has served."""

    def __init__(self, names: Sequence[str], subjects: Subjects) -> None:
        self._subjects = subjects
        self._served = dict.fromkeys(names, False)
        self._asking = asyncio.Lock()

    @property
    def all_served(self) -> bool:
        """Every configured component has been served by a live worker (true when none are configured)."""
        return all(self._served.values())

    def states(self) -> dict[str, ComponentState]:
        """Component → ``served`` or ``waiting``, in config order."""
        return {name: "served" if served else "waiting" for name, served in self._served.items()}

    async def refresh(self, nc: NatsClient) -> None:
        """Ask the registry which of the components still waiting a live worker serves now.

        Nothing is asked once all are served, or while another probe's question is out. A
        registry that cannot answer leaves the states as they were (it is logged).
        """
        if self.all_served or self._asking.locked():
            return
        async with self._asking:
            try:
                served = await self._served_now(nc)
            except (BusError, RegistryRefused) as exc:
                log.info("registry did not say which components are served", error=str(exc))
                return
            for name in self._served:
                if name in served and not self._served[name]:
                    self._served[name] = True
                    log.info("configured component served", component=name)
            if self.all_served:
                log.info("every configured component is served", components=len(self._served))

    async def _served_now(self, nc: NatsClient) -> set[str]:
        """Names of the components that have a tool some live worker serves, page by page."""
        served: set[str] = set()
        async for page in tool_pages(nc, self._subjects, timeout_s=REGISTRY_TIMEOUT_S):
            # A configured component's tools carry no version (a published package's always do).
            served |= {
                tool.component for tool in page.tools if not tool.version and page.live_workers.get(tool.name, 0) > 0
            }
        return served
