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


API_KEY_NAMESPACE: Final = "key:"
JWT_NAMESPACE: Final = "jwt:"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``subject`` is its namespaced identity, unique across every kind of
    credential: ``key:NAME`` (an API key), ``jwt:ISSUER#SUB`` (a token's ``sub`` from that issuer)
    or ``anonymous``. Tasks, rate limits, sessions, the audit trail and the bus read ``subject``,
    so a token whose ``sub`` is ``key:ci-bot`` is ``jwt:ISSUER#key:ci-bot``, never the key."""

    subject: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    method: str = "none"
    """How it was verified: ``jwt``, ``api-key`` or ``none``."""
    name: str = ""
    """What the credential itself calls it: the API key's name, the token's ``sub``."""


def api_key_principal(name: str, scopes: frozenset[str]) -> Principal:
    """The principal of the configured API key ``name``."""
    return Principal(API_KEY_NAMESPACE + name, scopes, {}, method="api-key", name=name)


def token_principal(issuer: str, sub: str, scopes: frozenset[str], claims: Mapping[str, Any]) -> Principal:
    """The principal of a verified token: its ``sub`` within its issuer's namespace.

    ``#`` separates them unambiguously: an issuer identifier has no fragment (RFC 8414 §2).
    """
    return Principal(f"{JWT_NAMESPACE}{issuer}#{sub}", scopes, claims, method="jwt", name=sub)


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
