"""Authentication: turning a request's credentials into a ``Principal``, or saying exactly why not.

Two kinds of credential, both in ``Authorization: Bearer <credential>`` (API keys also in
``X-API-Key``):
- **JWT access tokens** from one OAuth 2.1 authorization server (``[auth.oauth]``), verified as
  the MCP authorization spec asks of a resource server: signature against the issuer's JWKS,
  ``iss``, ``aud`` (this resource, RFC 8707), ``exp``/``nbf`` with some leeway, and ``sub``.
  The principal is ``jwt:ISSUER#SUB``; scopes come from ``scope`` (space-separated) or ``scp`` (a list).
- **Static API keys** (``[auth.api_keys.NAME]``), kept in config only as SHA-256 digests. The
  principal is ``key:NAME``; the two namespaces never meet (``gateway.principals``).

A verified token is remembered until it expires (bounded), so a client sending the same token
on every request pays for one signature check, not one per request (bench: ``auth``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
import structlog

from gateway.principals import Principal, api_key_principal, token_principal
from schemas.config import AuthSettings, OAuthSettings

log = structlog.get_logger(__name__)

TOKEN_CACHE_SIZE: Final = 10_000
"""Verified tokens remembered; past this the cache starts over (a flood of distinct tokens
costs signature checks, never memory)."""
JWKS_FETCH_TIMEOUT_S: Final = 5.0
JWKS_REFETCH_MIN_S: Final = 10.0
"""An unknown key id triggers a refetch (key rotation), at most this often."""
API_KEY_HEADER: Final = "x-api-key"


@dataclass(frozen=True, slots=True)
class AuthFailure(Exception):
    """Raised when a request's credentials do not authenticate it.

    ``reason`` is a stable word for audit and metrics (``missing_token``, ``invalid_token``,
    ``expired``, ``bad_signature``, ``wrong_audience``, ``wrong_issuer``, ``unknown_key``,
    ``insufficient_scope``, ``keys_unavailable``, ``invalid_request``); ``description`` is what the client reads in
    ``error_description``. ``status`` 400 refuses a request that sends two credentials
    (``invalid_request``), 401 asks for (new) credentials, 403 for more scope, 503
    means the gateway could not check (the issuer's keys are unreachable).
    """

    reason: str
    description: str
    status: int = 401
    subject: str | None = None
    """Who the credential claimed to be, when it got far enough to say (for the audit trail)."""


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """A token's scopes: ``scope`` (RFC 9068, space-separated) or ``scp`` (a list, as some issuers do)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()


def bearer_credential(headers: Mapping[str, str]) -> str | None:
    """The credential of ``Authorization: Bearer …`` (scheme case-insensitive), or of ``X-API-Key``."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return credential.strip()
        return None
    return headers.get(API_KEY_HEADER) or None


class KeySet:
    """The issuer's signing keys (JWKS) by key id, from a file or a URL, refreshed as configured."""

    def __init__(self, settings: OAuthSettings) -> None:
        self._url = settings.jwks_url
        self._file = settings.jwks_file
        self._ttl_s = settings.jwks_cache_s
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at = float("-inf")
        self._source_stamp: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key a token's header names (``kid``); without one, the set's only key.

        Raises:
            AuthFailure: no such key (after one refetch), or the keys cannot be loaded.
        """
        if self._stale():
            await self._load()
        found = self._find(kid)
        if found is None and time.monotonic() - self._loaded_at > JWKS_REFETCH_MIN_S:
            await self._load()  # the issuer may have rotated its keys
            found = self._find(kid)
        if found is None:
            raise AuthFailure("unknown_key", "the token is signed with a key this server does not know")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _stale(self) -> bool:
        if self._file is not None:
            try:
                return self._file.stat().st_mtime != self._source_stamp
            except OSError:
                return True
        return time.monotonic() - self._loaded_at > self._ttl_s

    async def _load(self) -> None:
        async with self._lock:
            try:
                if self._file is not None:
                    stamp = self._file.stat().st_mtime
                    document = json.loads(self._file.read_text())
                    self._source_stamp = stamp
                else:
                    assert self._url is not None  # settings require one of the two
                    document = await asyncio.to_thread(_fetch_json, self._url)
                key_set = jwt.PyJWKSet.from_dict(document)
            except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                if self._keys:  # keep serving with the keys we have; say so
                    log.warning("JWKS refresh failed; keeping the previous keys", error=str(exc))
                    self._loaded_at = time.monotonic()
                    return
                raise AuthFailure("keys_unavailable", "the authorization server's keys are unavailable", 503) from exc
            self._keys = {k.key_id: k for k in key_set.keys}
            self._loaded_at = time.monotonic()


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=JWKS_FETCH_TIMEOUT_S) as response:
        return json.loads(response.read())


_JWT_ERRORS: Final[tuple[tuple[type[jwt.PyJWTError], str, str], ...]] = (
    (jwt.ExpiredSignatureError, "expired", "the token has expired"),
    (jwt.ImmatureSignatureError, "invalid_token", "the token is not valid yet"),
    (jwt.InvalidAudienceError, "wrong_audience", "the token is not meant for this resource (audience)"),
    (jwt.InvalidIssuerError, "wrong_issuer", "the token was not issued by the trusted authorization server"),
    (jwt.InvalidSignatureError, "bad_signature", "the token's signature does not verify"),
    (jwt.MissingRequiredClaimError, "invalid_token", "the token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "invalid_token", "the token's signature algorithm is not accepted"),
)


class TokenVerifier:
    """Verifies JWT access tokens from one issuer for one resource."""

    def __init__(self, settings: OAuthSettings, resource: str) -> None:
        self._settings = settings
        self._audiences = settings.audiences or [resource]
        self._keys = KeySet(settings)

    async def verify(self, token: str) -> tuple[Principal, float]:
        """The token's principal and its expiry (unix time).

        Raises:
            AuthFailure: the token is malformed, forged, expired, or not for this resource.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthFailure("invalid_token", "the bearer token is not a JWT or a known API key") from None
        key = await self._keys.key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=self._settings.algorithms,
                audience=self._audiences,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            for kind, reason, description in _JWT_ERRORS:
                if isinstance(exc, kind):
                    raise AuthFailure(reason, description, subject=_claimed_subject(token)) from None
            raise AuthFailure("invalid_token", "the token is malformed") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthFailure("invalid_token", "the token's subject is not a string")
        if not carriable(subject):
            raise AuthFailure(
                "invalid_token", "the token's subject is not one line of UTF-8 text of at most 1,024 characters"
            )
        principal = token_principal(self._settings.issuer, subject, scopes_of(claims), claims)
        return principal, float(claims["exp"])


MAX_SUBJECT_CHARS = 1024
"""Longer than any issuer's subject identifier; every call carries it in a NATS header."""
_LINE_BREAK = re.compile(r"[\r\n]")


def carriable(subject: str) -> bool:
    """Whether a principal built on ``subject`` can be signed and sent (``bus.principal``): UTF-8
    text (JSON lets a token hold a lone surrogate, which UTF-8 cannot encode), no line break (it
    would end a NATS header line) and bounded. Other characters (NUL included) travel as they are
    and name their own principal (tests/gateway/test_pipeline_attacks.py)."""
    if len(subject) > MAX_SUBJECT_CHARS or _LINE_BREAK.search(subject):
        return False
    try:
        subject.encode()
    except UnicodeEncodeError:
        return False
    return True


def _claimed_subject(token: str) -> str | None:
    """``sub`` of a token that failed verification: only for the audit trail, never trusted."""
    try:
        subject = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        return None
    if not isinstance(subject, str):
        return None
    # Recorded in the audit trail, so it must encode: a lone surrogate is kept as its escape.
    return subject[:MAX_SUBJECT_CHARS].encode("utf-8", "backslashreplace").decode()


class Authenticator:
    """Every way a request may authenticate, with the scopes the endpoint needs from all of them."""

    def __init__(self, settings: AuthSettings) -> None:
        self.required_scopes = frozenset(settings.oauth.required_scopes) if settings.oauth else frozenset()
        self._tokens = TokenVerifier(settings.oauth, settings.resource) if settings.oauth else None
        self._api_keys = {
            key.sha256: api_key_principal(name, frozenset(key.scopes)) for name, key in settings.api_keys.items()
        }
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal of a request's headers (lower-cased names).

        Raises:
            AuthFailure: no credential, a bad one, or one without the required scopes.
        """
        credential = bearer_credential(headers)
        if credential is None:
            raise AuthFailure("missing_token", "this endpoint needs a bearer token")
        principal = self._api_keys.get(hashlib.sha256(credential.encode()).hexdigest()) if self._api_keys else None
        if principal is None:
            principal = await self._token(credential)
        missing = self.required_scopes - principal.scopes
        if missing:
            raise AuthFailure(
                "insufficient_scope",
                f"the token lacks the scope {' '.join(sorted(missing))}",
                403,
                subject=principal.subject,
            )
        return principal

    async def _token(self, token: str) -> Principal:
        if self._tokens is None:
            raise AuthFailure("invalid_token", "unknown API key")
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                return principal
            del self._verified[token]  # verify again: the answer is "expired", with leeway applied
        principal, expires = await self._tokens.verify(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal


def metadata_path(resource: str) -> str:
    """The RFC 9728 metadata path for a resource URI: the well-known prefix, then the resource's path."""
    path = resource.split("://", 1)[1].partition("/")[2].rstrip("/")
    return "/.well-known/oauth-protected-resource" + (f"/{path}" if path else "")


def metadata_url(resource: str) -> str:
    """Where clients fetch this resource's metadata (the ``resource_metadata`` of a 401)."""
    scheme, rest = resource.split("://", 1)
    return f"{scheme}://{rest.partition('/')[0]}{metadata_path(resource)}"


def protected_resource_metadata(settings: AuthSettings) -> dict[str, Any]:
    """The RFC 9728 document: the resource, its authorization server, its scopes."""
    document: dict[str, Any] = {"resource": settings.resource, "bearer_methods_supported": ["header"]}
    if settings.oauth is not None:
        document["authorization_servers"] = [settings.oauth.issuer]
    scopes = settings.scopes_supported or (settings.oauth.required_scopes if settings.oauth else [])
    if scopes:
        document["scopes_supported"] = scopes
    if settings.resource_name:
        document["resource_name"] = settings.resource_name
    return document
