"""Principals on the bus: a gateway vouches for who a request is; workers and the registry check.

A NATS header alone proves nothing: anyone allowed to publish a call could write any
``Toolbus-Principal``. So a gateway signs the principal together with the request's id (HMAC-
SHA256 under a key only gateways, workers and the registry hold: ``[security] principal_key``
or ``$TOOLBUS_PRINCIPAL_KEY``), and the receiver honours the header only when the signature
matches. An unsigned or forged principal is treated as no principal at all (a plain NATS
caller). The request id in the signature stops a signature being replayed onto another request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from bus.subjects import Header

_SEPARATOR: Final = b"\n"  # cannot occur in a request id (a subject token)


class PrincipalSigner:
    """Signs and verifies principals with one shared key."""

    def __init__(self, key: str | bytes) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) < 16:
            raise ValueError("the principal key must be at least 16 bytes")
        self._key = raw

    @classmethod
    def for_key(cls, key: str | None) -> PrincipalSigner | None:
        """A signer for a deployment's ``[nats] principal_key``; ``None`` when it has none."""
        return None if key is None else cls(key)

    def signature(self, principal: str, request_id: str) -> str:
        mac = hmac.new(self._key, request_id.encode() + _SEPARATOR + principal.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def stamp(self, headers: dict[str, str], principal: str, request_id: str) -> None:
        """Add the principal and its signature to a request's headers."""
        headers[Header.PRINCIPAL] = principal
        headers[Header.PRINCIPAL_SIGNATURE] = self.signature(principal, request_id)

    def verified(self, headers: Mapping[str, str] | None, request_id: str) -> str | None:
        """The principal in ``headers`` when a gateway signed it for ``request_id``; else ``None``."""
        if not headers:
            return None
        principal = headers.get(Header.PRINCIPAL)
        signature = headers.get(Header.PRINCIPAL_SIGNATURE)
        if principal is None or signature is None:
            return None
        return principal if hmac.compare_digest(signature, self.signature(principal, request_id)) else None
