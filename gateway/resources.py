"""``resources/*`` at the gateway, on the SDK's low-level server, in both protocol eras.

- ``resources/list``, ``resources/templates/list``: pages of the surface mirror, filtered by
  policy; 2026-07-28 results carry ``ttlMs``/``cacheScope`` as ``tools/list`` does (the SDK's
  result models add them).
- ``resources/read``: the serving component's workers answer (``gateway.surface_service``); a URI
  nobody serves is JSON-RPC -32602 with ``data.uri`` (SEP-2164).
- ``resources/subscribe`` / ``unsubscribe`` (2025-11-25): per session, forgotten when the session
  ends; a 2026-07-28 client names its URIs in ``subscriptions/listen`` instead, whose SDK handler
  (``gateway.changes.ListChanges.listen``) keeps them per stream.
- ``notifications/resources/updated``: a guest's ``notify.resource-updated`` arrives as a
  ``ResourceUpdated`` on ``Subjects.resource_updated`` (every gateway hears it); it is relayed to
  the 2025 sessions subscribed to that URI (on their GET stream) and published on the SDK's
  subscription bus, which writes it to each 2026 listen stream that asked for the URI. Only
  updates from the component that serves the URI are relayed.

Who may read or subscribe to what is decided once, by the front door (``gateway.front_door``).
"""

from __future__ import annotations

from typing import Any, Protocol

import mcp_types as types
import msgspec
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ResourceUpdated as ResourceUpdatedEvent
from mcp.shared.exceptions import MCPError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.errors import BusError, nats_boundary
from bus.subjects import Subjects
from gateway.changes import ListChanges
from gateway.errors import INVALID_PARAMS, CallFailed, InvalidCursor, to_jsonrpc
from gateway.inbound import MAX_RESOURCE_SUBSCRIPTIONS
from gateway.principals import principal_of
from gateway.sdk_adapter import connection_of
from gateway.surface_service import SurfaceService
from schemas.codec import DecodeError, decode
from schemas.errors import ErrorCode
from schemas.wire import ResourceUpdated

log = structlog.get_logger(__name__)


class UpdatableSession(Protocol):
    """A 2025-era session that can be told a resource changed (the SDK's ``Connection``)."""

    async def send_resource_updated(self, uri: str) -> None: ...


def surface_error(exc: CallFailed, uri: str | None = None) -> MCPError:
    """The JSON-RPC error of a failed read, get or completion; ``data.uri`` for an unknown resource."""
    error = to_jsonrpc(exc)
    data = dict(error.data)
    if uri is not None and exc.code == ErrorCode.NOT_FOUND:
        data["uri"] = uri
    return MCPError(error.code, error.message, data)


def _json(value: Any) -> Any:
    return msgspec.to_builtins(value)


class ResourceFrontend:
    """The SDK's ``resources/*`` handlers, and the relay of resource updates to subscribers."""

    def __init__(self, service: SurfaceService, changes: ListChanges) -> None:
        self.service = service
        self._changes = changes
        self._sessions: dict[Any, set[str]] = {}
        """2025-era session (its SDK ``Connection``) → the URIs it subscribed to."""
        self._subscription: Subscription | None = None

    def register(self, server: Any) -> None:
        """Add the ``resources/*`` handlers to an SDK ``Server``."""
        server.add_request_handler("resources/list", types.PaginatedRequestParams, self.list_resources)
        server.add_request_handler("resources/templates/list", types.PaginatedRequestParams, self.list_templates)
        server.add_request_handler("resources/read", types.ReadResourceRequestParams, self.read)
        server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, self.subscribe)
        server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self.unsubscribe)

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        try:
            page = self.service.resources(params.cursor if params else None, principal_of(ctx))
        except InvalidCursor as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        resources = [types.Resource.model_validate(_json(e.item)) for e in page.entries]
        return types.ListResourcesResult(resources=resources, next_cursor=page.next_cursor)

    async def list_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        try:
            page = self.service.templates(params.cursor if params else None, principal_of(ctx))
        except InvalidCursor as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        templates = [types.ResourceTemplate.model_validate(_json(e.item)) for e in page.entries]
        return types.ListResourceTemplatesResult(resource_templates=templates, next_cursor=page.next_cursor)

    async def read(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            result = await self.service.read(uri, principal_of(ctx))
        except CallFailed as exc:
            raise surface_error(exc, uri) from None
        return types.ReadResourceResult.model_validate(result)

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams) -> Any:
        """``resources/subscribe`` (2025 era): this session hears of ``uri``'s updates until it ends."""
        uri = str(params.uri)
        if self.service.surfaces.resource_owner(uri) is None:
            raise MCPError(INVALID_PARAMS, f"Resource not found: {uri}", {"uri": uri})
        connection = connection_of(ctx)
        if connection.session_id is not None:
            uris = self._sessions.get(connection)
            if uris is None:
                uris = self._sessions[connection] = set()
                connection.exit_stack.callback(self._sessions.pop, connection, None)
            if uri not in uris and len(uris) >= MAX_RESOURCE_SUBSCRIPTIONS:
                raise MCPError(INVALID_PARAMS, f"at most {MAX_RESOURCE_SUBSCRIPTIONS} subscriptions per session")
            uris.add(uri)
        return types.EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams) -> Any:
        """``resources/unsubscribe``: no more updates of ``uri`` for this session (none is fine)."""
        uris = self._sessions.get(connection_of(ctx))
        if uris is not None:
            uris.discard(str(params.uri))
        return types.EmptyResult()

    # -- updates ---------------------------------------------------------------------------------
    async def attach(self, nc: NatsClient, subjects: Subjects) -> None:
        """Relay guests' resource updates from the bus until ``detach``."""
        with nats_boundary:
            self._subscription = await nc.subscribe(subjects.resource_updated, cb=self._on_updated)

    async def detach(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                with nats_boundary:
                    await subscription.unsubscribe()
            except BusError:
                pass

    async def _on_updated(self, msg: Msg) -> None:
        try:
            update = decode(msg.data, ResourceUpdated)
        except DecodeError as exc:
            log.warning("undecodable resource update ignored", error=str(exc))
            return
        if self.service.surfaces.resource_owner(update.uri) != update.component:
            # One component cannot make clients refetch another's resources (or unknown ones).
            log.info(
                "resource update from a component not serving it ignored",
                uri=update.uri[:200],
                component=update.component,
            )
            return
        await self.updated(update.uri)

    async def updated(self, uri: str) -> None:
        """Tell the subscribers of ``uri`` in both eras that it changed."""
        try:
            await self._changes.bus.publish(ResourceUpdatedEvent(uri=uri))
        except Exception:
            log.exception("publishing a resource update to listen streams failed", uri=uri)
        for session, uris in list(self._sessions.items()):
            if uri in uris:
                try:
                    await session.send_resource_updated(uri)
                except Exception as exc:  # best effort: the session may be going away
                    log.debug("resource update not delivered", uri=uri, error=str(exc) or type(exc).__name__)
