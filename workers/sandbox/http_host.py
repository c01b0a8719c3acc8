"""Outbound HTTP for guests: toolbus's own host interface, policed by an allowlist.

wasmtime-py's ``wasi:http`` has no hook to refuse a host: a guest linked with it reaches
anything the worker can. So toolbus never links ``wasi:http``; a guest that needs the network
imports ``toolbus:http/client`` (``schemas/wit/toolbus-http/http.wit``), whose one function,
``fetch``, is implemented here in Python. Every request is checked before a socket is opened:

- the scheme is ``http`` or ``https``;
- the host and port match an ``allow`` entry of a granted ``http`` capability: ``host`` (the
  scheme's default port), ``host:port``, or ``*.domain`` (any subdomain, default port);
- the **address** is checked too: the name is resolved once, and if any address it resolves to
  is loopback, private, link-local, shared, multicast, reserved or otherwise not globally
  routable, the request is refused unless an ``allow`` entry names that very address (an entry
  ``10.0.0.7:8080`` lets a guest reach it; ``*.corp.example`` never reaches ``10.0.0.7``). A
  name is only a name: what it resolves to can change between two lookups (DNS rebinding), so
  the socket is opened to the address that was checked — there is no second lookup — while
  the ``Host`` header and the TLS server name (SNI, certificate check) stay the URL's host;
- redirects are not followed: the guest sees the 3xx, and its next ``fetch`` is checked again;
- the request may take the capability's ``timeout_s``, never more than what is left of the call;
- a response body larger than ``max_response_bytes`` is refused, never truncated.

A refusal or a network failure is the ``err`` case of ``fetch``'s result, a string saying why;
it never traps the guest.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from wasmtime import component as wc

from workers.sandbox.call_context import current

HTTP_INTERFACE = "toolbus:http/client@0.1.0"
"""The import name a guest uses (``import toolbus:http/client@0.1.0;`` in its world)."""
HTTP_INTERFACE_UNVERSIONED = HTTP_INTERFACE.split("@", 1)[0]

DEFAULT_PORTS = {"http": 80, "https": 443}
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # fullmatch: "$" would let a final "\n" in
_HOP_BY_HOP = frozenset({"host", "connection", "content-length", "transfer-encoding"})
"""Headers the host sets itself; a guest's values for them are dropped."""
_READ_CHUNK = 64 * 1024

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""Host name and port → the addresses to connect to (``system_resolver``; tests inject a stub)."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for ``host`` (TCP), in its order of preference."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answers))


def _address(text: str) -> Address | None:
    """``text`` as an IP address (an IPv4-mapped IPv6 one as its IPv4), or ``None`` for a name."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
"""The NAT64 well-known prefix: its last 32 bits are an IPv4 address that a NAT64 gateway reaches."""
_NEVER_GLOBAL: Final = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated): a tunnel may carry it to the IPv4
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215): translated inside a site
)
"""IPv6 ranges Python counts as global (3.11) that can only lead to an embedded IPv4 address."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 (2002::/16) or NAT64 (64:ff9b::/96) address leads to, if any."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_special(address: Address) -> bool:
    """True for an address a guest must not reach by name: loopback, private, link-local (cloud
    metadata 169.254.169.254), shared (100.64/10), multicast, reserved, unspecified… and an IPv6
    address that leads to such an IPv4 one through a translator or tunnel (NAT64, 6to4,
    IPv4-compatible): ``64:ff9b::a00:7`` is 10.0.0.7 behind a NAT64 gateway."""
    if not address.is_global or address.is_multicast:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _NEVER_GLOBAL):
            return True
        inner = embedded_ipv4(address)
        return inner is not None and is_special(inner)
    return False


def _seconds_left() -> float | None:
    """What is left of the running call's time: epoch interruption cannot stop host code, so a
    request's time comes out of the call's own."""
    context = current()
    return None if context is None else context.seconds_left()


@dataclass(frozen=True)
class AllowEntry:
    """One ``allow`` entry: an exact host or a ``*.`` suffix, on one port or the default ones."""

    host: str
    port: int | None
    subdomains: bool

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        host, port = text, None
        if text.startswith("["):  # [v6]:port
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif ":" in text:
            host, _, port_text = text.rpartition(":")
            port = int(port_text)
        subdomains = host.startswith("*.")
        return cls(host.removeprefix("*.").rstrip(".").lower(), port, subdomains)

    def names_address(self, address: Address, port: int, scheme: str) -> bool:
        """True when this entry is an IP literal equal to ``address`` (on the request's port)."""
        return self.matches_port(port, scheme) and _address(self.host) == address

    def matches_port(self, port: int, scheme: str) -> bool:
        return port == (DEFAULT_PORTS[scheme] if self.port is None else self.port)

    def matches(self, host: str, port: int, scheme: str) -> bool:
        if not self.matches_port(port, scheme):
            return False
        if self.subdomains:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True)
class HttpPolicy:
    """What the ``http`` capabilities granted to one component allow, merged."""

    allow: tuple[AllowEntry, ...]
    timeout_s: float
    max_response_bytes: int
    granted_by: tuple[str, ...]
    """Names of the capabilities, for error messages."""
    resolve: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def merge(
        cls, grants: Sequence[tuple[str, Sequence[str], float, int]], resolve: Resolver = system_resolver
    ) -> HttpPolicy:
        """One policy from ``(name, allow, timeout_s, max_response_bytes)`` of each capability."""
        return cls(
            allow=tuple(AllowEntry.parse(entry) for _, allow, _, _ in grants for entry in allow),
            timeout_s=max(timeout for _, _, timeout, _ in grants),
            max_response_bytes=max(limit for _, _, _, limit in grants),
            granted_by=tuple(name for name, _, _, _ in grants),
            resolve=resolve,
        )

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be fetched, or None when it may."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return f"not a valid URL: {exc}"
        if parts.scheme not in DEFAULT_PORTS:
            return f"scheme {parts.scheme!r} is not allowed (only http and https)"
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return "the URL has no host"
        port = port or DEFAULT_PORTS[parts.scheme]
        if any(entry.matches(host, port, parts.scheme) for entry in self.allow):
            return None
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{port} is not on the allowlist of capability {' or '.join(map(repr, self.granted_by))}"

    def checked_address(self, url: str) -> str:
        """The one address ``url`` (already allowed by name) may be fetched from.

        Raises:
            _Refused: an address the host resolves to is special and not named by the allowlist.
            OSError: the name does not resolve.
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        literal = _address(host)
        answers = [host] if literal is not None else list(self.resolve(host, port))
        if not answers:
            raise OSError(f"{host} resolves to no address")
        for text in answers:
            address = _address(text)
            if address is None:
                raise _Refused(f"{host} resolved to {text!r}, which is not an address")
            if is_special(address) and not any(e.names_address(address, port, parts.scheme) for e in self.allow):
                # Any one answer is enough to refuse: a rebinding name mixes a public address in.
                what = f"{host} resolves to {address}" if literal is None else str(address)
                raise _Refused(
                    f"{what}, a loopback, private, link-local or otherwise special address; only an "
                    "allow entry naming that address explicitly lets a guest reach it"
                )
        return answers[0]

    def fetch(self, request: Any) -> Any:
        """The ``fetch`` host function's body: a ``response`` record, or an error string."""
        url, method = request.url, request.method.upper()
        refusal = self.refusal(url)
        if refusal is not None:
            return f"refused: {refusal}"
        if not _METHOD.fullmatch(method):
            return f"refused: {method!r} is not an HTTP method"
        left = _seconds_left()
        timeout_s = self.timeout_s if left is None else min(self.timeout_s, left)
        if timeout_s <= 0:
            return "the call's deadline has passed"
        # Here, not at import: http.client (with the email package) is ~6 ms of every worker's
        # start, and only a guest granted HTTP that fetches needs it (issue 17: restart <= 200 ms).
        import http.client

        try:
            address = self.checked_address(url)
            return self._send(url, address, method, request.headers, request.body, timeout_s)
        except _Refused as exc:
            return f"refused: {exc}"
        except _TooLarge:
            return f"response body larger than {self.max_response_bytes} bytes"
        except TimeoutError:
            return f"timed out after {timeout_s:.3g}s"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return f"request failed: {type(exc).__name__}: {exc}"

    def _send(
        self, url: str, address: str, method: str, headers: Sequence[Any], body: bytes | None, timeout_s: float
    ) -> Any:
        import http.client  # already imported by fetch; a dict lookup

        deadline = time.monotonic() + timeout_s
        parts = urlsplit(url)
        host = parts.hostname or ""
        connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_type(host, parts.port, timeout=timeout_s)
        # The connection keeps the URL's host for the Host header and (HTTPS) the TLS server name
        # and certificate check; only the socket goes to the address checked above. http.client
        # opens its socket through this attribute (HTTPSConnection.connect wraps what it returns).
        connection._create_connection = _pinned(address)  # type: ignore[attr-defined]
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.putrequest(method, target)
            for header in headers:
                if header.name.lower() not in _HOP_BY_HOP:
                    connection.putheader(header.name, header.value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(bytes(body) if body is not None else None)
            response = connection.getresponse()
            data = bytearray()
            while chunk := response.read(_READ_CHUNK):
                data += chunk
                if len(data) > self.max_response_bytes:
                    raise _TooLarge
                if time.monotonic() > deadline:
                    raise TimeoutError
            return _record(
                status=response.status,
                headers=[_record(name=name, value=value) for name, value in response.getheaders()],
                body=bytes(data),
            )
        finally:
            connection.close()


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    """Raised when the address a host resolves to may not be reached."""


def _pinned(address: str) -> Callable[..., socket.socket]:
    """``socket.create_connection`` to ``address``, whatever host it is asked for: no second lookup."""

    def create_connection(
        host_port: tuple[str, int], timeout: float | None = None, source_address: Any = None
    ) -> socket.socket:
        return socket.create_connection((address, host_port[1]), timeout, source_address)

    return create_connection


def _record(**fields: Any) -> Any:
    record = wc.Record()
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def link_http(linker: Any, policy: HttpPolicy) -> None:
    """Define ``toolbus:http/client`` in a component linker, enforcing ``policy``."""

    def fetch(_store: Any, request: Any) -> Any:
        return policy.fetch(request)

    with linker.root() as root, root.add_instance(HTTP_INTERFACE) as instance:
        instance.add_func("fetch", fetch)
