"""Views: named subsets of the tools, each served on its own MCP path ``/mcp/<view>`` (docs/views.md).

A view comes from ``[views.<name>]`` in the gateway's config or from the views bucket
(``stores.view_store``, ``toolbus views set``), which wins for a name in both and changes at run time.

- ``ViewRouter`` (ASGI, in front of the front door) turns ``/mcp/<view>`` into the MCP path with
  the view's name in the scope (``VIEW_KEY``); everything behind — the front door, the hot path,
  the SDK — serves the one MCP endpoint and reads the view with ``view_in`` / ``view_of``. An
  unknown view is 404. A 2025 session belongs to the path that opened it: named on another path
  it is 404 ``Session not found``, as a foreign principal's session is.
- What a view shows is decided in one place, ``ToolService.entry`` / ``ToolService.page``
  (``gateway.tool_service``), which both the hot path and the SDK path ask: a tool outside the
  view is exactly an unknown tool there.
- ``ViewBook`` holds the views and tells ``ListChanges`` which view changed, so only that view's
  clients hear ``notifications/tools/list_changed``.
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mcp.server.context import ServerRequestContext
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.codec import DecodeError, decode, encode
from schemas.config import ViewSettings
from schemas.wire import ViewSpec

VIEW_KEY: Final = "toolbus.view"
"""Where ``ViewRouter`` leaves the request's view name in the ASGI scope (absent: the whole catalogue)."""
_CURRENT: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar("toolbus_view", default=None)
"""The same name, for the one SDK callback that gets no request (``view_now``)."""
_DECIDED_LIMIT: Final = 100_000
SESSIONS_LIMIT: Final = 10_000
"""Session → path bindings kept (the SDK's own session limit); past it, dead ones are swept."""
_SESSION_HEADER: Final = b"mcp-session-id"
_NOT_FOUND_BODY: Final = encode(
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
)


@dataclass(slots=True)
class View:
    """One view: its globs, compiled once, and its decisions kept (tools/list asks per tool)."""

    name: str
    tools: tuple[str, ...]
    _pattern: re.Pattern[str] | None = None
    _decided: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pattern = re.compile("|".join(fnmatch.translate(g) for g in self.tools)) if self.tools else None

    def allows(self, tool: str) -> bool:
        """Whether ``tool`` is in the view."""
        allowed = self._decided.get(tool)
        if allowed is None:
            allowed = self._pattern is not None and self._pattern.fullmatch(tool) is not None
            if len(self._decided) >= _DECIDED_LIMIT:
                self._decided.clear()
            self._decided[tool] = allowed
        return allowed


@dataclass(frozen=True, slots=True)
class _Stored:
    """A view as read from the views bucket (the watcher's value type)."""

    name: str
    spec: ViewSpec


def decode_view(key: str, value: bytes) -> _Stored | None:
    """A views-bucket entry (``CatalogueMirrorWatcher``'s ``decode_value``); ``None`` for one that does not decode."""
    try:
        return _Stored(key, decode(value, ViewSpec))
    except DecodeError:
        return None


ViewListener = Callable[[str], None]
"""Told the name of a view whose tool list changed (on the event loop; must not block)."""


class ViewBook:
    """The views a gateway serves: its config's, overridden by the views bucket's (kept in step by a watcher)."""

    def __init__(self, configured: Mapping[str, ViewSettings] | None = None) -> None:
        self._configured = {name: View(name, tuple(v.tools)) for name, v in (configured or {}).items()}
        self._stored: dict[str, View] = {}
        self._listeners: list[ViewListener] = []
        self.loaded = asyncio.Event()
        """Set once the bucket's views are in."""

    def get(self, name: str) -> View | None:
        """The view ``name``, or ``None`` when there is none."""
        return self._stored.get(name) or self._configured.get(name)

    def names(self) -> list[str]:
        return sorted(self._configured.keys() | self._stored.keys())

    def subscribe(self, listener: ViewListener) -> Callable[[], None]:
        """Call ``listener`` with a view's name whenever it changes; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- the watcher's side (gateway.catalogue_mirror.MirrorTarget) ------------------------------
    def __len__(self) -> int:
        return len(self._stored)

    def replace(self, values: Iterable[_Stored]) -> None:
        before = {name: view.tools for name, view in self._stored.items()}
        self._stored = {value.name: View(value.name, tuple(value.spec.tools)) for value in values}
        after = {name: view.tools for name, view in self._stored.items()}
        for name in sorted(before.keys() | after.keys()):
            if before.get(name) != after.get(name):
                self._changed(name)

    def put(self, value: _Stored) -> None:
        self._stored[value.name] = View(value.name, tuple(value.spec.tools))
        self._changed(value.name)

    def remove(self, key: str) -> None:
        if self._stored.pop(key, None) is not None:
            self._changed(key)

    def _changed(self, name: str) -> None:
        for listener in list(self._listeners):
            listener(name)


def view_in(scope: Mapping[str, Any] | None) -> str | None:
    """The view a request came in on (``None``: the MCP path itself, every tool)."""
    if scope is None:
        return None
    view = scope.get(VIEW_KEY)
    return view if isinstance(view, str) else None


def view_now() -> str | None:
    """The view of the request being served, for an SDK callback given no request or context.

    Only ``get_tool_input_schema`` needs it: the SDK asks it for a tool's schema inside the
    2026-07-28 request's own task, before any handler, to check ``Mcp-Param-*`` headers; a tool
    outside the view must have no schema there, as an unknown tool has none. Everything else reads
    the scope (``view_in``, ``view_of``).
    """
    return _CURRENT.get()


def view_of(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The view of the request an SDK handler serves (what ``ViewRouter`` put in its HTTP scope)."""
    request = ctx.request
    return view_in(request.scope if isinstance(request, Request) else None)


class ViewRouter:
    """ASGI middleware: ``PATH/<view>`` served as ``PATH`` with the view in the scope; sessions keep their path."""

    def __init__(self, app: ASGIApp, *, path: str, views: ViewBook, session_alive: Callable[[str], bool]) -> None:
        self.app = app
        self._path = path
        self._prefix = path.rstrip("/") + "/"
        self._views = views
        self._alive = session_alive
        self._session_view: dict[str, str | None] = {}
        """2025 session id → the view whose path opened it (``None``: the MCP path itself)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        view: str | None = None
        if path.startswith(self._prefix):
            view = path[len(self._prefix) :]
            if self._views.get(view) is None:
                await _respond(send, 404, encode({"error": "not_found", "error_description": "no such view"}))
                return
            scope = {**scope, "path": self._path, "raw_path": self._path.encode(), VIEW_KEY: view}
        elif path != self._path:
            await self.app(scope, receive, send)
            return
        session_id = _session_id(scope)
        if session_id is not None and session_id in self._session_view and self._session_view[session_id] != view:
            # Word for word the SDK's answer for a session that does not exist: the view of one
            # path is not reachable through another path's session.
            await _respond(send, 404, _NOT_FOUND_BODY)
            return
        token = _CURRENT.set(view)
        try:
            await self.app(scope, receive, send if session_id is not None else _binding(send, self._bind, view))
        finally:
            _CURRENT.reset(token)

    def _bind(self, session_id: str, view: str | None) -> None:
        if len(self._session_view) >= SESSIONS_LIMIT:
            for dead in [s for s in self._session_view if not self._alive(s)]:
                del self._session_view[dead]
        self._session_view[session_id] = view


def _session_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _SESSION_HEADER:
            return bytes(value).decode("latin-1")
    return None


def _binding(send: Send, bind: Callable[[str, str | None], None], view: str | None) -> Send:
    """``send`` that binds the session an answer opens (its ``Mcp-Session-Id``) to ``view``."""

    async def binding(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] < 400:
            for name, value in message.get("headers", ()):
                if name.lower() == _SESSION_HEADER:
                    bind(value.decode("latin-1"), view)
        await send(message)

    return binding


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
