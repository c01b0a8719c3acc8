"""Who a request is: the verified identity every authorization, limit, audit and task decision uses.

The gateway's authentication front (``gateway.auth``) puts a ``Principal`` into each HTTP
request's ASGI scope; everything behind it reads it with ``principal_in``. A request that passed
no authentication (auth off, as ``toolbus up`` on loopback runs) is ``ANONYMOUS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

SCOPE_KEY: Final = "toolbus.principal"
"""Where the authentication front leaves the request's ``Principal`` in the ASGI scope."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``subject`` names it (a token's ``sub``, an API key's name)."""

    subject: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    method: str = "none"
    """How it was verified: ``jwt``, ``api-key`` or ``none``."""


ANONYMOUS: Final = Principal("anonymous")
"""Every request when authentication is off: in such a deployment tasks are shared by all its
clients, like any unauthenticated API."""


def principal_in(scope: Mapping[str, Any] | None) -> Principal:
    """The principal the authentication front stored in an ASGI scope (``ANONYMOUS`` if none)."""
    if scope is None:
        return ANONYMOUS
    principal = scope.get(SCOPE_KEY)
    return principal if isinstance(principal, Principal) else ANONYMOUS


def principal_of(ctx: ServerRequestContext[Any, Any]) -> Principal:
    """Who sent the request an SDK handler serves: what the front door verified for its HTTP request.

    Everything the gateway decides per principal — which tools ``tools/list`` shows, whose tasks
    a request may read, list and cancel, who a call is audited as — reads it here or, on the hot
    path, with ``principal_in`` from the same ASGI scope.
    """
    request = ctx.request
    return principal_in(request.scope if isinstance(request, Request) else None)
