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

from workers.sandbox.http_host import HttpPolicy, Resolver, system_resolver


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
            if self.path == "/redirect":  # to the cloud metadata address: a guest must not be taken there
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
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


# -- attacks: every way to spell an internal address -------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 well-known prefix → 127.0.0.1 behind the translator
        "64:ff9b::a00:7",  # NAT64 → 10.0.0.7
        "64:ff9b::a9fe:a9fe",  # NAT64 → 169.254.169.254 (cloud metadata)
        "64:ff9b:1::a00:7",  # local-use NAT64 prefix
        "2002:7f00:1::1",  # 6to4 → 127.0.0.1
        "2002:a00:7::1",  # 6to4 → 10.0.0.7
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "::a00:7",
        "fe80::1",  # link-local
        "fe80::1%eth0",  # with a zone
        "fc00::1",  # unique local
        "fd12:3456::1",
        "ff02::1",  # multicast
        "::",
        "2001:db8::1",  # documentation
        "100::1",  # discard-only
    ],
)
def test_no_ipv6_spelling_of_an_internal_address_is_reached(address: str) -> None:
    resolver = StubResolver({"v6.example.test": [address]})
    answer = policy(["*.example.test"], resolver).fetch(Request("http://v6.example.test/"))
    assert isinstance(answer, str) and answer.startswith("refused: v6.example.test resolves to "), answer


def test_a_public_address_behind_nat64_or_6to4_is_still_reachable() -> None:
    # 93.184.215.14 is public: its NAT64 and 6to4 forms are too (checked without connecting).
    for address in ["64:ff9b::5db8:d70e", "2002:5db8:d70e::1"]:
        resolver = StubResolver({"public.example.test": [address]})
        assert policy(["*.example.test"], resolver).checked_address("http://public.example.test/") == address


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f.1", "0x7f000001", "017700000001", "0177.0.0.1", "127.1", "LOCALHOST", "localhost."],
)
def test_numeric_and_odd_spellings_of_loopback_are_refused(internal: Internal, host: str) -> None:
    # Even an allow entry naming the odd spelling itself only passes the name check: the system
    # resolver turns each into 127.0.0.1 (inet_aton accepts them), which the address check refuses.
    before = len(internal.hosts)
    url = f"http://{host}:{internal.port}/"
    for allow in (["*.example.test"], [f"{host.rstrip('.').lower()}:{internal.port}"]):
        answer = policy(allow).fetch(Request(url))
        assert isinstance(answer, str) and answer.startswith("refused:"), (allow, answer)
    assert len(internal.hosts) == before, "a connection was made"


def test_userinfo_does_not_smuggle_a_host_past_the_allowlist(internal: Internal) -> None:
    before = len(internal.hosts)
    resolver = StubResolver({"allowed.example.test": ["93.184.215.14"]})
    for url in [
        f"http://allowed.example.test@127.0.0.1:{internal.port}/",
        f"http://allowed.example.test:80@127.0.0.1:{internal.port}/",
    ]:
        answer = policy(["allowed.example.test", f"allowed.example.test:{internal.port}"], resolver).fetch(Request(url))
        assert isinstance(answer, str) and answer.startswith("refused: 127.0.0.1:"), answer
    assert len(internal.hosts) == before and resolver.lookups == []


def test_a_port_not_on_the_allowlist_is_refused(internal: Internal) -> None:
    resolver = StubResolver({"pinned.example.test": ["127.0.0.1"]})
    allow = [f"pinned.example.test:{internal.port}", f"127.0.0.1:{internal.port}"]
    answer = policy(allow, resolver).fetch(Request(f"http://pinned.example.test:{internal.port + 1}/"))
    assert isinstance(answer, str) and "is not on the allowlist" in answer, answer
    assert resolver.lookups == []


def test_a_redirect_to_an_internal_address_is_not_followed(internal: Internal) -> None:
    resolver = StubResolver({"pinned.example.test": ["127.0.0.1"]})
    allow = [f"pinned.example.test:{internal.port}", f"127.0.0.1:{internal.port}"]
    before = len(internal.hosts)
    answer = policy(allow, resolver).fetch(Request(f"http://pinned.example.test:{internal.port}/redirect"))
    assert not isinstance(answer, str), answer
    assert answer.status == 302  # the guest sees it; its next fetch is checked on its own
    assert len(internal.hosts) == before + 1 and resolver.lookups == ["pinned.example.test"]


def test_proxy_variables_of_the_worker_are_not_honoured(internal: Internal, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy in the worker's environment would carry the request somewhere the check never saw;
    # this one is a closed port, so only a direct connection to the checked address succeeds.
    closed = internal.port + 1
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{closed}")
    resolver = StubResolver({"pinned.example.test": ["127.0.0.1"]})
    allow = [f"pinned.example.test:{internal.port}", f"127.0.0.1:{internal.port}"]
    answer = policy(allow, resolver).fetch(Request(f"http://pinned.example.test:{internal.port}/"))
    assert not isinstance(answer, str), answer
    assert answer.status == 200 and internal.hosts[-1] == f"pinned.example.test:{internal.port}"


@pytest.mark.parametrize("method", ["GET\n", "GET\r\nX-Injected: 1", "G ET", ""])
def test_a_method_that_is_not_one_token_is_refused_before_any_connection(internal: Internal, method: str) -> None:
    allow = [f"127.0.0.1:{internal.port}"]
    answer = policy(allow).fetch(Request(f"http://127.0.0.1:{internal.port}/", method=method))
    assert isinstance(answer, str)
    assert "is not an HTTP method" in answer
