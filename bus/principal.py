"""Principals on the bus: a gateway vouches for who a request is; workers and the registry check.

A NATS header alone proves nothing: anyone allowed to publish a call could write any
``Toolbus-Principal``. So a gateway signs the principal (HMAC-SHA256 under a key only gateways,
workers and the registry hold: ``[nats] principal_key`` or ``$TOOLBUS_PRINCIPAL_KEY``), and the
receiver honours the header only when the signature matches. An unsigned or forged principal is
treated as no principal at all (a plain NATS caller).

The signature binds everything it authorises, so it cannot be lifted onto anything else:

- the **subject**: a call's signature does not open ``tasks.list`` or ``tasks.result``;
- the **request id**: it does not vouch for another request;
- the **principal**;
- an **expiry**: it is worthless once the request's time is over (plus ``CLOCK_SKEW_S``);
- a **digest of the body**: the same headers on other arguments prove nothing.

``Toolbus-Principal-Sig`` carries ``EXPIRES_MS.MAC``: the expiry travels in the clear (the MAC
covers it), so no second header is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from collections.abc import Mapping
from typing import Final

from bus.subjects import Header

CLOCK_SKEW_S: Final = 5.0
"""How far the signer's clock may run behind the verifier's: hosts of one deployment run NTP."""
_LENGTH: Final = struct.Struct(">I").pack
"""A field's length prefix: 4 bytes, big-endian."""
_EXPIRY_DIGITS: Final = 20
"""A signature's expiry is milliseconds since 1970 in ASCII digits (13 of them until 2286)."""
_CONTEXT: Final = b"toolbus-principal-v2"
"""Domain separation: a MAC made for anything else under the same key never matches."""


class PrincipalSigner:
    """Signs and verifies principals with one shared key."""

    def __init__(self, key: str | bytes) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) < 16:
            raise ValueError("the principal key must be at least 16 bytes")
        self._keyed = hmac.new(raw, _CONTEXT, hashlib.sha256)
        """The MAC state after the key and the context: each message's MAC starts from a copy."""

    @classmethod
    def for_key(cls, key: str | None) -> PrincipalSigner | None:
        """A signer for a deployment's ``[nats] principal_key``; ``None`` when it has none."""
        return None if key is None else cls(key)

    def _mac(self, subject: str, request_id: str, principal: str, expires_ms: int, body: bytes) -> str:
        # From a copy: the key's two padded blocks are hashed once, not per message (a one-shot
        # hmac.digest re-hashes them: 3.7 -> 5.7 us, timeit). One update of one joined buffer,
        # no generator: every call of a worker and a gateway makes this MAC.
        mac = self._keyed.copy()
        s, r, p, e = subject.encode(), request_id.encode(), principal.encode(), str(expires_ms).encode()
        # Each field length-prefixed: no choice of values can make two field lists collide.
        mac.update(b"".join((_LENGTH(len(s)), s, _LENGTH(len(r)), r, _LENGTH(len(p)), p, _LENGTH(len(e)), e)))
        mac.update(hashlib.sha256(body).digest())
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def stamp(self, headers: dict[str, str], principal: str, *, subject: str, body: bytes, valid_for_s: float) -> None:
        """Add ``principal`` and its signature to the headers of a request to ``subject`` with
        ``body``; the headers must already hold the request id. The signature expires after
        ``valid_for_s`` (a call's timeout: nobody should act on the request after that).

        Raises:
            KeyError: ``headers`` has no ``Toolbus-Request-Id``.
        """
        expires_ms = int((time.time() + valid_for_s) * 1000)
        mac = self._mac(subject, headers[Header.REQUEST_ID], principal, expires_ms, body)
        headers[Header.PRINCIPAL] = principal
        headers[Header.PRINCIPAL_SIGNATURE] = f"{expires_ms}.{mac}"

    def verified(self, headers: Mapping[str, str] | None, subject: str, body: bytes) -> str | None:
        """The principal in ``headers`` when a gateway signed it for this request id, this
        ``subject`` and this ``body``, and the signature has not expired; else ``None``."""
        if not headers:
            return None
        principal = headers.get(Header.PRINCIPAL)
        signature = headers.get(Header.PRINCIPAL_SIGNATURE)
        request_id = headers.get(Header.REQUEST_ID)
        if principal is None or signature is None or request_id is None:
            return None
        expires_text, _, mac = signature.partition(".")
        # Anything read from the headers must be judged here without raising: what raised escaped
        # before any caller's error handler (a worker left the call unanswered). isdigit passes
        # '²', which int() refuses; int() refuses over 4,300 digits; compare_digest refuses str
        # with non-ASCII characters (checked below). The expiry is ms since 1970 (13 digits until 2286), in the
        # one spelling stamp() writes: a leading zero would re-spell a signed value.
        if not (len(expires_text) <= _EXPIRY_DIGITS and expires_text.isascii() and expires_text.isdigit()):
            return None
        expires_ms = int(expires_text)
        if str(expires_ms) != expires_text or expires_ms / 1000 + CLOCK_SKEW_S < time.time():
            return None
        expected = self._mac(subject, request_id, principal, expires_ms, body)
        # A MAC is base64 (ASCII) text: anything else is no MAC, and compare_digest would raise.
        return principal if mac.isascii() and hmac.compare_digest(mac, expected) else None
