"""Who may use the console: an authenticated principal holding the operator scope.

"Operator" is one scope, ``toolbus:operator`` (``OPERATOR_SCOPE``), on an API key
(``[auth.api_keys.NAME] scopes``) or in a JWT's ``scope``/``scp``: the one place the console
decides. The credential is the gateway's own (``gateway.auth.Authenticator``), so a key that
opens the MCP endpoint opens the console only if it also holds the scope.

A browser signs in by posting its API key (or token) to ``/console/login``; the credential is
kept in a cookie that is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it) and ``Secure`` behind HTTPS, and is checked again on every request — so a key
removed from the config stops working at once, and replicas behind a load balancer need no
shared session store. Other clients send ``Authorization: Bearer`` as for MCP.

Actions (POST) also need a CSRF token: a digest of the credential, which a page of ours embeds
and a page of another site cannot compute (double protection beside ``SameSite=Strict``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from starlette.requests import Request

from gateway.auth import Authenticator, AuthFailure, bearer_credential
from gateway.principals import Principal

OPERATOR_SCOPE: Final = "toolbus:operator"
"""The scope that makes a principal an operator of the console."""
COOKIE: Final = "toolbus_console"
COOKIE_MAX_AGE_S: Final = 8 * 60 * 60
"""A sign-in lasts a working day."""
CSRF_FIELD: Final = "csrf"


class ConsoleRefused(Exception):
    """Raised when a request may not use the console: ``status`` 401 (who are you?) or 403 (not an operator)."""

    def __init__(self, status: int, message: str, *, reason: str, subject: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.subject = subject


def credential_of(request: Request) -> str | None:
    """The request's credential: a bearer header or ``X-API-Key`` first, else the console cookie."""
    return bearer_credential({k.lower(): v for k, v in request.headers.items()}) or request.cookies.get(COOKIE)


async def operator_of(
    authenticator: Authenticator | None, request: Request, credential: str | None = None
) -> tuple[Principal, str]:
    """The operator making ``request`` (or holding ``credential``, at sign-in) and the credential used.

    Raises:
        ConsoleRefused: no authentication is configured, no or a bad credential (401), or a
            principal without ``OPERATOR_SCOPE`` (403).
    """
    if authenticator is None:
        raise ConsoleRefused(
            403, "the console needs [auth] (API keys or OAuth) in the gateway's config", reason="console_without_auth"
        )
    credential = credential or credential_of(request)
    if credential is None:
        raise ConsoleRefused(401, "sign in with an operator's API key", reason="missing_token")
    try:
        principal = await authenticator.authenticate({"authorization": f"Bearer {credential}"})
    except AuthFailure as failure:
        status = 401 if failure.status in (400, 401) else failure.status
        raise ConsoleRefused(status, failure.description, reason=failure.reason, subject=failure.subject) from None
    if OPERATOR_SCOPE not in principal.scopes:
        raise ConsoleRefused(
            403,
            f"{principal.subject} lacks the scope {OPERATOR_SCOPE}",
            reason="not_operator",
            subject=principal.subject,
        )
    return principal, credential


def csrf_token(credential: str) -> str:
    """The CSRF token of a signed-in credential (a digest: the page cannot leak the credential)."""
    return hashlib.sha256(b"toolbus-console-csrf\0" + credential.encode()).hexdigest()


def csrf_ok(credential: str, sent: object) -> bool:
    """Does ``sent`` (a form field) carry the CSRF token of ``credential``?"""
    return isinstance(sent, str) and hmac.compare_digest(sent, csrf_token(credential))
