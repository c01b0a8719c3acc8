"""Capabilities, deny by default: a probe guest (componentize-py) tries to reach outside its
sandbox through a real worker on a real nats-server, while other calls flow through the same
worker. Each attempt must fail with the guest's own error, touch nothing on the host, and leave
the worker serving."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from bus.subjects import Subjects
from schemas.codec import decode, encode
from schemas.config import ComponentSettings, Settings
from schemas.wire import CallToolResult
from tests.conftest import text
from tests.workers.conftest import start_worker
from workers.sandbox.capabilities import Grants
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError
from workers.service import WorkerService
from workers.sources import load_components, load_one
from workers.toolchains.componentize import build_component

GUESTS = Path(__file__).resolve().parent / "guests"
PROBE_SOURCE = GUESTS / "probe"
"""A component (componentize-py) with one export per thing a hostile guest would try."""
PEEK_SOURCE = GUESTS / "peek"
"""A command module (C) that reads or writes a path and reports its environment."""
HOST_SECRET = "TOOLBUS_TEST_HOST_SECRET"


@dataclass
class Site:
    """A loopback HTTP server that counts the requests it got."""

    port: int
    body: bytes
    requests: list[str] = field(default_factory=list)
    redirect_to: str | None = None
    """Answer every request with a 302 to this URL instead."""


@contextmanager
def serving(body: bytes = b"hello from the allowed host") -> Iterator[Site]:
    site = Site(port=0, body=body)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append(self.path)
            if site.redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", site.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(site.body)))
            self.end_headers()
            self.wfile.write(site.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def allowed_site() -> Iterator[Site]:
    with serving() as site:
        yield site


@pytest.fixture(scope="module")
def other_site() -> Iterator[Site]:
    with serving(b"you should never see this") as site:
        yield site


@pytest.fixture(scope="module")
def probe_wasm(cache_dir: Path) -> Path:
    return build_component(PROBE_SOURCE, "probe", cache_dir)


@pytest.fixture(scope="module")
def host_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("host")
    dirs = {name: root / name for name in ("ro", "rw", "outside")}
    for path in dirs.values():
        path.mkdir()
    (dirs["ro"] / "notes.txt").write_text("read me", encoding="utf-8")
    (dirs["outside"] / "secret.txt").write_text("host secret", encoding="utf-8")
    return dirs


def probe_settings(allowed_site: Site, host_dirs: dict[str, Path], **extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "capabilities": {
                "docs": {"kind": "dir", "host": host_dirs["ro"], "guest": "/docs"},
                "scratch": {"kind": "dir", "host": host_dirs["rw"], "guest": "/scratch", "writable": True},
                "token": {"kind": "env", "vars": {"API_TOKEN": "granted-value"}},
                "web": {"kind": "http", "allow": [f"127.0.0.1:{allowed_site.port}"], "max_response_bytes": 1000},
            },
            "components": [
                {
                    "name": "probe",
                    "path": "/dev/null",  # replaced by the built file in `load_probe`
                    "capabilities": ["docs", "scratch", "token", "web"],
                    **extra,
                }
            ],
        }
    )


def load_probe(engine_host: EngineHost, cache_dir: Path, wasm: Path, settings: Settings) -> LoadedComponent:
    [configured] = settings.components
    return LoadedComponent.load(
        engine_host, configured, wasm, cache_dir, grants=Grants.resolve(configured, settings.capabilities)
    )


@pytest.fixture(scope="module")
def probe(
    engine_host: EngineHost,
    cache_dir: Path,
    probe_wasm: Path,
    allowed_site: Site,
    host_dirs: dict[str, Path],
) -> LoadedComponent:
    with pytest.MonkeyPatch.context() as env:
        # Set while the component loads and runs: the guest must still never see it.
        env.setenv(HOST_SECRET, "leaked")
        return load_probe(engine_host, cache_dir, probe_wasm, probe_settings(allowed_site, host_dirs))


@dataclass
class Flow:
    """kit_add calls sent one after another while a test runs; all must succeed."""

    answered: int = 0
    wrong: list[Any] = field(default_factory=list)


@asynccontextmanager
async def calls_flowing(nc: NatsClient, subjects: Subjects) -> AsyncIterator[Flow]:
    flow = Flow()
    stop = asyncio.Event()

    async def run() -> None:
        i = 0
        while not stop.is_set():
            reply = await nc.request(subjects.call("kit_add"), encode({"a": i, "b": 1}), timeout=5)
            result = decode(reply.data, CallToolResult)
            if result.is_error or result.structured_content != i + 1:
                flow.wrong.append(result)
            flow.answered += 1
            i += 1

    task = asyncio.create_task(run())
    try:
        yield flow
        for _ in range(500):  # at least a few must overlap the test's own call, however quick it was
            if flow.answered >= 3 or task.done():
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    assert flow.answered > 0 and not flow.wrong, f"other calls were affected: {flow.wrong[:3]}"


@pytest.fixture
def served(kit: LoadedComponent, probe: LoadedComponent) -> list[LoadedComponent]:
    """The ``worker`` fixture serves the probe next to the testkit (its calls flow during each attempt)."""
    return [kit, probe]


async def call(nc: NatsClient, subjects: Subjects, tool: str, **arguments: Any) -> CallToolResult:
    async with calls_flowing(nc, subjects):
        reply = await nc.request(subjects.call(f"probe_{tool}"), encode(arguments), timeout=10)
    return decode(reply.data, CallToolResult)


def refused(result: CallToolResult) -> str:
    assert result.is_error, f"the sandbox let it through: {result}"
    return text(result)


# --- Filesystem ------------------------------------------------------------------------------


async def test_a_granted_directory_can_be_read(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    result = await call(nc, subjects, "read_file", path="/docs/notes.txt")
    assert not result.is_error and result.structured_content == "read me"


@pytest.mark.parametrize(
    "path",
    [
        "outside/secret.txt",  # the host path itself: the guest has no host paths at all
        "/docs/../outside/secret.txt",  # `..` cannot leave a preopen
        "/secret.txt",
        "/etc/passwd",
    ],
)
async def test_a_read_outside_the_granted_directories_is_refused(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, host_dirs: dict[str, Path], path: str
) -> None:
    if path.startswith("outside/"):
        path = str(host_dirs["outside"] / "secret.txt")
    reason = refused(await call(nc, subjects, "read_file", path=path))
    assert reason.startswith(("FileNotFoundError", "PermissionError")), reason
    assert "host secret" not in reason


async def test_the_guest_sees_no_root_directory(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    assert refused(await call(nc, subjects, "list_dir", path="/")).startswith("FileNotFoundError")


@pytest.mark.parametrize("name", ["notes.txt", "new.txt"])
async def test_a_write_into_a_read_only_directory_is_refused(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, host_dirs: dict[str, Path], name: str
) -> None:
    reason = refused(await call(nc, subjects, "write_file", path=f"/docs/{name}", content="overwritten"))
    assert reason.startswith("PermissionError"), reason
    assert sorted(p.name for p in host_dirs["ro"].iterdir()) == ["notes.txt"]
    assert (host_dirs["ro"] / "notes.txt").read_text(encoding="utf-8") == "read me"


async def test_a_writable_directory_can_be_written(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, host_dirs: dict[str, Path]
) -> None:
    result = await call(nc, subjects, "write_file", path="/scratch/out.txt", content="written by the guest")
    assert not result.is_error and result.structured_content == len("written by the guest")
    assert (host_dirs["rw"] / "out.txt").read_text(encoding="utf-8") == "written by the guest"
    # Writable does not mean escapable.
    reason = refused(await call(nc, subjects, "write_file", path="/scratch/../outside/x.txt", content="x"))
    assert reason.startswith("PermissionError") and not (host_dirs["outside"] / "x.txt").exists()


# --- Environment -----------------------------------------------------------------------------


async def test_only_granted_environment_variables_exist(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOST_SECRET, "leaked")
    assert (await call(nc, subjects, "env_names")).structured_content == ["API_TOKEN"]
    assert (await call(nc, subjects, "get_env", name="API_TOKEN")).structured_content == "granted-value"
    assert (await call(nc, subjects, "get_env", name=HOST_SECRET)).structured_content is None
    assert (await call(nc, subjects, "get_env", name="PATH")).structured_content is None


# --- Outbound HTTP ---------------------------------------------------------------------------


async def test_http_to_an_allowed_host_works(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, allowed_site: Site
) -> None:
    result = await call(nc, subjects, "fetch", url=f"http://127.0.0.1:{allowed_site.port}/weather?city=Oslo")
    assert not result.is_error and result.structured_content == "200 hello from the allowed host"
    assert allowed_site.requests[-1] == "/weather?city=Oslo"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:{other}/", "127.0.0.1:{other} is not on the allowlist of capability 'web'"),
        # The allowlist names an address, and a name that resolves to it is a different host.
        ("http://localhost:{allowed}/", "localhost:{allowed} is not on the allowlist"),
        ("http://evil@127.0.0.1:{other}/", "127.0.0.1:{other} is not on the allowlist"),
        ("file:///etc/passwd", "scheme 'file' is not allowed (only http and https)"),
        ("http://[::1]:{other}/", "[::1]:{other} is not on the allowlist"),
    ],
)
async def test_http_off_the_allowlist_is_refused_before_any_connection(
    nc: NatsClient,
    subjects: Subjects,
    worker: WorkerService,
    allowed_site: Site,
    other_site: Site,
    url: str,
    why: str,
) -> None:
    ports = {"other": other_site.port, "allowed": allowed_site.port}
    before = len(allowed_site.requests)
    reason = refused(await call(nc, subjects, "fetch", url=url.format(**ports)))
    assert reason == f"fetch failed: refused: {why.format(**ports)}" or why.format(**ports) in reason, reason
    assert other_site.requests == [] and len(allowed_site.requests) == before


async def test_a_redirect_off_the_allowlist_is_returned_not_followed(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, allowed_site: Site, other_site: Site
) -> None:
    allowed_site.redirect_to = f"http://127.0.0.1:{other_site.port}/stolen"
    try:
        result = await call(nc, subjects, "fetch", url=f"http://127.0.0.1:{allowed_site.port}/go")
    finally:
        allowed_site.redirect_to = None
    assert not result.is_error and result.structured_content == "302 "
    assert other_site.requests == []


async def test_an_http_response_over_the_size_limit_is_refused(
    nc: NatsClient, subjects: Subjects, worker: WorkerService, allowed_site: Site
) -> None:
    original = allowed_site.body
    allowed_site.body = b"x" * 5000  # the capability allows 1000 bytes
    try:
        reason = refused(await call(nc, subjects, "fetch", url=f"http://127.0.0.1:{allowed_site.port}/big"))
    finally:
        allowed_site.body = original
    assert reason == "fetch failed: response body larger than 1000 bytes"


def test_http_to_a_closed_port_is_an_error_not_a_trap() -> None:
    # The allowlist lets it through; the network refuses, and the guest hears why.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = Settings.model_validate(
        {
            "capabilities": {"web": {"kind": "http", "allow": [f"127.0.0.1:{port}"]}},
            "components": [{"name": "probe", "path": "/dev/null", "capabilities": ["web"]}],
        }
    )
    grants = Grants.resolve(settings.components[0], settings.capabilities)
    assert grants.http is not None
    request = type("Request", (), {"url": f"http://127.0.0.1:{port}/", "method": "GET", "headers": [], "body": None})
    assert str(grants.http.fetch(request)).startswith("request failed: ConnectionRefusedError")


# --- Sockets ---------------------------------------------------------------------------------


async def test_a_raw_socket_to_loopback_is_refused(nc: NatsClient, subjects: Subjects, worker: WorkerService) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        reason = refused(await call(nc, subjects, "connect", host="127.0.0.1", port=port))
        assert reason.startswith("PermissionError"), reason
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


# --- Load-time checks ------------------------------------------------------------------------


def test_importing_toolbus_http_without_an_http_capability_fails_at_load(
    engine_host: EngineHost, cache_dir: Path, probe_wasm: Path
) -> None:
    settings = ComponentSettings(name="probe", path=probe_wasm)
    with pytest.raises(ComponentLoadError) as failure:
        LoadedComponent.load(engine_host, settings, probe_wasm, cache_dir)
    assert str(failure.value) == (
        "component 'probe' imports `toolbus:http/client@0.1.0` (outbound HTTP) but is granted no `http` "
        "capability; list one in its `capabilities` (docs/sandbox.md)"
    )


WASI_HTTP_COMPONENT = """
(component
  (import "wasi:http/outgoing-handler@0.2.0" (instance))
)
"""


def test_importing_wasi_http_fails_at_load_even_with_an_http_capability(
    engine_host: EngineHost, cache_dir: Path, tmp_path: Path, allowed_site: Site, host_dirs: dict[str, Path]
) -> None:
    wat = tmp_path / "wasi-http.wat"
    wat.write_text(WASI_HTTP_COMPONENT, encoding="utf-8")
    settings = probe_settings(allowed_site, host_dirs)
    with pytest.raises(ComponentLoadError, match=r"imports `wasi:http/outgoing-handler@0\.2\.0`: toolbus does not"):
        load_probe(engine_host, cache_dir, wat, settings)


def test_a_missing_granted_directory_fails_at_load(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "capabilities": {"data": {"kind": "dir", "host": tmp_path / "nope", "guest": "/data"}},
            "components": [{"name": "x", "path": "/dev/null", "capabilities": ["data"]}],
        }
    )
    with pytest.raises(ComponentLoadError, match=r"component 'x', capability 'data': directory .*nope does not exist"):
        Grants.resolve(settings.components[0], settings.capabilities)


def test_a_from_host_variable_must_be_set_when_the_component_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLBUS_TEST_UNSET", raising=False)
    monkeypatch.setenv("TOOLBUS_TEST_REGION", "eu-north")
    settings = Settings.model_validate(
        {
            "capabilities": {
                "region": {"kind": "env", "from_host": ["TOOLBUS_TEST_REGION"], "vars": {"MODE": "test"}},
                "unset": {"kind": "env", "from_host": ["TOOLBUS_TEST_UNSET"]},
            },
            "components": [
                {"name": "x", "path": "/dev/null", "capabilities": ["region"]},
                {"name": "y", "path": "/dev/null", "capabilities": ["unset"]},
            ],
        }
    )
    x, y = settings.components
    assert Grants.resolve(x, settings.capabilities).env == (("MODE", "test"), ("TOOLBUS_TEST_REGION", "eu-north"))
    with pytest.raises(ComponentLoadError, match="capability 'unset': from_host: TOOLBUS_TEST_UNSET is not set"):
        Grants.resolve(y, settings.capabilities)


async def test_the_worker_process_loads_capabilities_from_config(
    nc: NatsClient,
    subjects: Subjects,
    engine_host: EngineHost,
    cache_dir: Path,
    probe_wasm: Path,
    allowed_site: Site,
    host_dirs: dict[str, Path],
) -> None:
    # The path a `toolbus worker` takes: runner.load_components resolves the grants from config.
    settings = probe_settings(allowed_site, host_dirs).model_copy(update={"cache_dir": cache_dir})
    settings = settings.model_copy(
        update={"components": [settings.components[0].model_copy(update={"path": probe_wasm})]}
    )
    [loaded] = load_components(settings, engine_host)
    assert isinstance(loaded, LoadedComponent)
    service = await start_worker(nc, subjects, loaded)
    try:
        reply = await nc.request(subjects.call("probe_get_env"), b'{"name":"API_TOKEN"}', timeout=10)
        assert decode(reply.data, CallToolResult).structured_content == "granted-value"
    finally:
        await service.stop(grace_s=1)


# --- Command modules -------------------------------------------------------------------------


def test_a_command_module_gets_its_directories_and_variables_and_nothing_else(
    c_toolchain: str,
    engine_host: EngineHost,
    cache_dir: Path,
    host_dirs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HOST_SECRET, "leaked")
    settings = Settings.model_validate(
        {
            "capabilities": {
                "docs": {"kind": "dir", "host": host_dirs["ro"], "guest": "/docs"},
                "token": {"kind": "env", "vars": {"API_TOKEN": "granted-value"}},
            },
            "components": [
                {
                    "name": "peek",
                    "kind": "command",
                    "source": PEEK_SOURCE,
                    "input_schema": {"type": "object"},
                    "capabilities": ["docs", "token"],
                }
            ],
        }
    )
    [configured] = settings.components
    peek = load_one(configured, engine_host, cache_dir, grants=Grants.resolve(configured, settings.capabilities))

    def run(path: str, mode: str = "r") -> Any:
        result = peek.call("peek", {"path": path, "mode": mode}, timeout_s=5)
        assert not result.is_error, result
        return result.structured_content

    secret = str(host_dirs["outside"] / "secret.txt")
    assert run("/docs/notes.txt") == {"token": "granted-value", "secret": None, "ok": True, "text": "read me"}
    assert run(secret)["ok"] is False
    assert run("/docs/../outside/secret.txt")["ok"] is False
    assert run("/docs/new.txt", "w")["ok"] is False
    assert sorted(p.name for p in host_dirs["ro"].iterdir()) == ["notes.txt"]


def test_a_command_module_cannot_be_granted_http() -> None:
    with pytest.raises(ValueError, match="'web' grants outbound HTTP, which a command module cannot import"):
        Settings.model_validate(
            {
                "capabilities": {"web": {"kind": "http", "allow": ["example.com"]}},
                "components": [
                    {
                        "name": "c",
                        "kind": "command",
                        "path": "/dev/null",
                        "input_schema": {"type": "object"},
                        "capabilities": ["web"],
                    }
                ],
            }
        )


def test_a_published_package_naming_an_unknown_capability_fails_to_load_cleanly(tmp_path: Path) -> None:
    # A package's settings come from the registry, not from this worker's config: nothing
    # checked its capability names before Grants.resolve does.
    from workers.package_follower import published_settings

    settings = published_settings("pkg", tmp_path / "pkg.wasm", {"capabilities": ["nope"]})
    with pytest.raises(ComponentLoadError, match=r"capability 'nope': not defined under \[capabilities\] on this"):
        Grants.resolve(settings, {})
    command = published_settings(
        "cmd", tmp_path / "cmd.wasm", {"kind": "command", "input_schema": {"type": "object"}, "capabilities": ["web"]}
    )
    web = Settings.model_validate({"capabilities": {"web": {"kind": "http", "allow": ["example.com"]}}})
    with pytest.raises(ComponentLoadError, match="a command module cannot be granted outbound HTTP"):
        Grants.resolve(command, web.capabilities)
