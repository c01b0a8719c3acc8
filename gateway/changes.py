"""List change notifications: catalogue changes, coalesced, to every connected MCP client.

Tools (``gateway.catalogue_mirror``), and resources, templates and prompts
(``gateway.surface_mirror``, ``follow_surfaces``): one round names each list that changed.

The catalogue calls ``ListChanges`` synchronously after each change; that only sets a flag, so
the KV watcher never waits for a client. A background task turns a burst of changes into one
round of notifications: it waits until the catalogue has been quiet for ``debounce_s`` (but no
longer than ``max_delay_s`` after the burst began), then

- 2026-07-28 (stateless): publishes one ``ToolsListChanged`` on the SDK's in-memory
  ``SubscriptionBus``; the SDK's ``ListenHandler`` (registered as the server's
  ``subscriptions/listen`` handler) buffers it per open listen stream and writes it from that
  stream's own task, so a slow client never holds up the publisher;
- 2025-11-25 (sessions): marks every initialized session as owing one
  ``notifications/tools/list_changed`` on its GET stream. Each session has at most one send in
  flight; changes that arrive meanwhile fold into one more send after it, so a stalled client
  costs one parked task and never an unbounded queue.

Every notification is a level trigger ("refetch tools/list"), sent after the change is in the
catalogue, so a client that refetches on receipt always sees at least that change.

Views (``gateway.views``): each view's 2026 listen streams hang off a bus of their own, and each
2025 session remembers the view it was opened on; a change of one view's tool list notifies that
view's clients only. Catalogue and surface changes, and resource updates, go to every bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Final, Protocol

import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types import SubscriptionsListenRequestParams, SubscriptionsListenResult

from bus.cancellation import cancel_and_wait
from gateway.catalogue_mirror import CatalogueChange, CatalogueMirror
from gateway.sdk_adapter import connection_of
from gateway.surface_mirror import SurfaceMirror
from gateway.views import ViewBook, view_of

log = structlog.get_logger(__name__)

DEBOUNCE_S: Final = 0.05
"""Quiet time that ends a burst of catalogue changes (one registry publish puts many keys)."""
MAX_DELAY_S: Final = 0.5
"""Longest a change waits for its notification while the catalogue keeps changing."""


TOOLS: Final = "tools"
RESOURCES: Final = "resources"
PROMPTS: Final = "prompts"
_EVENTS: Final[dict[str, type[ToolsListChanged | ResourcesListChanged | PromptsListChanged]]] = {
    TOOLS: ToolsListChanged,
    RESOURCES: ResourcesListChanged,
    PROMPTS: PromptsListChanged,
}
"""Which list changed → the SDK event a 2026-07-28 listen stream turns into its notification."""
_SENDS: Final = {
    TOOLS: "send_tool_list_changed",
    RESOURCES: "send_resource_list_changed",
    PROMPTS: "send_prompt_list_changed",
}
"""Which list changed → the ``LegacySession`` method that tells a 2025-era session."""


class LegacySession(Protocol):
    """What a 2025-era session needs to be told about changes: the SDK's ``Connection`` has it all."""

    exit_stack: AsyncExitStack

    async def send_tool_list_changed(self) -> None: ...

    async def send_resource_list_changed(self) -> None: ...

    async def send_prompt_list_changed(self) -> None: ...


class _Mailbox:
    """One legacy session's pending notifications: at most one send in flight, later changes fold in."""

    def __init__(self, session: LegacySession, view: str | None = None) -> None:
        self.session = session
        self.view = view
        """The view the session was opened on (``None``: the MCP path itself)."""
        self.pending: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    def poke(self, lists: frozenset[str]) -> None:
        if not lists:
            return
        self.pending |= lists
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain(), name="list-changed")

    async def _drain(self) -> None:
        while self.pending:
            lists, self.pending = sorted(self.pending, key=list(_EVENTS).index), set()
            try:
                for changed in lists:
                    await getattr(self.session, _SENDS[changed])()
            except Exception as exc:  # best effort: the session may be going away
                log.debug("list_changed not delivered", error=str(exc) or type(exc).__name__)
                return


class _EveryBus:
    """What ``bus.publish`` reaches: the listen streams of the MCP path and of every view."""

    def __init__(self, listeners: dict[str | None, tuple[InMemorySubscriptionBus, ListenHandler]]) -> None:
        self._listeners = listeners

    async def publish(self, event: ServerEvent) -> None:
        for bus, _ in list(self._listeners.values()):
            await bus.publish(event)


class ListChanges:
    """Tells connected clients, in both protocol eras, that ``tools/list`` changed."""

    def __init__(
        self,
        catalogue: CatalogueMirror,
        *,
        debounce_s: float = DEBOUNCE_S,
        max_delay_s: float = MAX_DELAY_S,
        views: ViewBook | None = None,
    ):
        self._catalogue = catalogue
        self._debounce_s = debounce_s
        self._max_delay_s = max_delay_s
        self._views = views
        self._listeners: dict[str | None, tuple[InMemorySubscriptionBus, ListenHandler]] = {}
        """View (``None``: the MCP path) → the bus and handler of its ``subscriptions/listen`` streams."""
        self._listener(None)
        self.bus = _EveryBus(self._listeners)
        """Carries events to every open ``subscriptions/listen`` stream, whatever its path."""
        self._sessions: dict[LegacySession, _Mailbox] = {}
        self._changed = asyncio.Event()
        self._lists: set[str] = set()
        """The lists changed since the last round (``tools``, ``resources``, ``prompts``)."""
        self._changed_views: set[str] = set()
        """Views whose tool list changed since the last round."""
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_surfaces: Callable[[], None] | None = None
        self._unsubscribe_views: Callable[[], None] | None = None
        self.rounds = 0
        """Notification rounds sent so far (one per coalesced burst)."""

    def __len__(self) -> int:
        """The 2025-era sessions currently being told about changes."""
        return len(self._sessions)

    def follow_surfaces(self, surfaces: SurfaceMirror) -> None:
        """Also tell clients when resources (and templates) or prompts change."""
        self._unsubscribe_surfaces = surfaces.subscribe(self._on_surfaces)

    def _listener(self, view: str | None) -> ListenHandler:
        found = self._listeners.get(view)
        if found is None:
            bus = InMemorySubscriptionBus()
            found = self._listeners[view] = (bus, ListenHandler(bus))
        return found[1]

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        """The server's ``subscriptions/listen`` handler (2026-07-28): a stream on the request's view."""
        # A view's name reached here only through ViewRouter, which serves known views only:
        # the handlers are bounded by the views there are.
        return await self._listener(view_of(ctx))(ctx, params)

    def start(self) -> None:
        """Follow the catalogue (and the views) and send notifications from a background task."""
        if self._task is None:
            self._unsubscribe = self._catalogue.subscribe(self._on_change)
            if self._views is not None:
                self._unsubscribe_views = self._views.subscribe(self._on_view)
            self._task = asyncio.create_task(self._run(), name="tools-list-changes")

    async def stop(self) -> None:
        """Stop following the catalogue, end the listen streams and drop pending legacy sends."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unsubscribe_surfaces is not None:
            self._unsubscribe_surfaces()
            self._unsubscribe_surfaces = None
        if self._unsubscribe_views is not None:
            self._unsubscribe_views()
            self._unsubscribe_views = None
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        self.end_streams()
        for mailbox in list(self._sessions.values()):
            if mailbox.task is not None:
                mailbox.task.cancel()
        self._sessions.clear()

    def end_streams(self) -> None:
        """End every open listen stream gracefully (its client gets the final result and may re-listen)."""
        for _, handler in list(self._listeners.values()):
            handler.close()

    async def on_initialized(self, ctx: ServerRequestContext[Any, Any], _params: types.NotificationParams) -> None:
        """``notifications/initialized`` handler: the 2025-era session hears of changes from now on."""
        self.add_session(connection_of(ctx), view_of(ctx))

    def add_session(self, session: LegacySession, view: str | None = None) -> None:
        """Notify ``session`` (opened on ``view``) of changes until its exit stack unwinds (the session ended)."""
        if session in self._sessions:
            return
        self._sessions[session] = _Mailbox(session, view)
        session.exit_stack.callback(self._forget, session)

    def _forget(self, session: LegacySession) -> None:
        mailbox = self._sessions.pop(session, None)
        if mailbox is not None and mailbox.task is not None:
            mailbox.task.cancel()

    def _on_change(self, _change: CatalogueChange) -> None:
        self._lists.add(TOOLS)
        self._changed.set()

    def _on_surfaces(self, lists: frozenset[str]) -> None:
        self._lists |= lists
        self._changed.set()

    def _on_view(self, view: str) -> None:
        self._changed_views.add(view)
        self._changed.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._changed.wait()
            began = loop.time()
            while True:
                self._changed.clear()
                left = self._max_delay_s - (loop.time() - began)
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), min(self._debounce_s, left))
                except TimeoutError:
                    break  # quiet: the burst is over
            await self._notify()

    async def _notify(self) -> None:
        self.rounds += 1
        lists, self._lists = frozenset(self._lists), set()
        views, self._changed_views = frozenset(self._changed_views), set()
        for changed in sorted(lists, key=list(_EVENTS).index):
            try:
                await self.bus.publish(_EVENTS[changed]())
            except Exception:
                log.exception("publishing list_changed to listen streams failed", list=changed)
        if TOOLS not in lists:  # a view's own change: its listen streams only
            for view in sorted(views):
                found = self._listeners.get(view)
                if found is not None:
                    try:
                        await found[0].publish(ToolsListChanged())
                    except Exception:
                        log.exception("publishing list_changed to a view's listen streams failed", view=view)
        for mailbox in list(self._sessions.values()):
            mailbox.poke(lists | {TOOLS} if mailbox.view in views else lists)
        log.debug("list_changed sent", lists=sorted(lists), views=sorted(views), legacy_sessions=len(self._sessions))
