"""Guest egress is checked at the address, not only by name (SSRF, DNS rebinding).

A real loopback HTTP server stands for an internal service. Names reach it through the
machine's own resolver (``localhost`` → 127.0.0.1 from /etc/hosts) or through a stub resolver
the test controls (the policy's injected ``resolve``), never by editing the machine's hosts file.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from workers.http_host import HttpPolicy, Resolver, system_resolver


@dataclass
class Internal:
    """A loopback HTTP server that records the Host header of every request it got."""

    port: int = 0
    hosts: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def internal() -> Iterator[Internal]:
    site = Internal()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.hosts.append(self.headers.get("Host", ""))
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b"internal")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Request:
    url: str
    method: str = "GET"
    headers: Sequence[Any] = ()
    body: bytes | None = None


@dataclass
class StubResolver:
    """Answers from a table, counting lookups (a second lookup would be a rebinding window)."""

    answers: dict[str, list[str]]
    lookups: list[str] = field(default_factory=list)

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.answers[host]


def policy(allow: list[str], resolve: Resolver = system_resolver) -> HttpPolicy:
    grants = [("web", allow, 5.0, 1000)]
    return HttpPolicy.merge(grants, resolve=resolve)


def test_a_name_allowed_by_name_that_resolves_to_loopback_is_refused(internal: Internal) -> None:
    before = len(internal.hosts)
    answer = policy([f"localhost:{internal.port}"]).fetch(Request(f"http://localhost:{internal.port}/"))
    assert isinstance(answer, str) and answer.startswith("refused: localhost resolves to 127.0.0.1"), answer
    assert len(internal.hosts) == before, "a connection was made"


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("metadata.example.test", ["169.254.169.254"]),  # cloud metadata (link-local)
        ("intranet.example.test", ["10.1.2.3"]),  # private
        ("cgnat.example.test", ["100.64.0.1"]),  # shared address space
        ("rebind.example.test", ["93.184.215.14", "127.0.0.1"]),  # a public answer mixed in
        ("mapped.example.test", ["::ffff:127.0.0.1"]),  # IPv4-mapped IPv6 loopback
        ("v6.example.test", ["::1"]),
        ("zero.example.test", ["0.0.0.0"]),
    ],
)
def test_a_wildcard_entry_never_reaches_a_special_address(name: str, addresses: list[str]) -> None:
    resolver = StubResolver({name: addresses})
    answer = policy(["*.example.test"], resolver).fetch(Request(f"http://{name}/"))
    assert isinstance(answer, str) and answer.startswith(f"refused: {name} resolves to "), answer


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/", "http://[::ffff:127.0.0.1]:{port}/"])
def test_an_address_literal_is_checked_like_a_resolved_one(internal: Internal, url: str) -> None:
    # Allowed by a *.domain entry it could never be; by its own literal it is, so the entry is
    # written for a neighbouring port to prove the address check is what refuses.
    answer = policy([f"127.0.0.1:{internal.port + 1}", "[::ffff:127.0.0.1]"]).fetch(
        Request(url.format(port=internal.port))
    )
    assert isinstance(answer, str) and answer.startswith("refused:"), answer


def test_the_socket_goes_to_the_checked_address_with_the_names_host_header(internal: Internal) -> None:
    # pinned.example.test exists only in the stub: the request can only succeed if the socket
    # goes to the address the policy checked, and the policy looks it up exactly once.
    resolver = StubResolver({"pinned.example.test": ["127.0.0.1"]})
    allow = [f"pinned.example.test:{internal.port}", f"127.0.0.1:{internal.port}"]
    answer = policy(allow, resolver).fetch(Request(f"http://pinned.example.test:{internal.port}/"))
    assert not isinstance(answer, str), answer
    assert answer.status == 200 and answer.body == b"internal"
    assert resolver.lookups == ["pinned.example.test"]
    assert internal.hosts[-1] == f"pinned.example.test:{internal.port}"


def test_an_explicit_address_entry_lets_a_name_reach_it(internal: Internal) -> None:
    allow = [f"localhost:{internal.port}", f"127.0.0.1:{internal.port}"]
    answer = policy(allow).fetch(Request(f"http://localhost:{internal.port}/"))
    assert not isinstance(answer, str), answer
    assert answer.status == 200 and internal.hosts[-1] == f"localhost:{internal.port}"


def test_a_name_that_does_not_resolve_is_an_error_not_a_trap() -> None:
    resolver = StubResolver({"nowhere.example.test": []})
    answer = policy(["*.example.test"], resolver).fetch(Request("http://nowhere.example.test/"))
    assert isinstance(answer, str) and answer.startswith("request failed: OSError"), answer
