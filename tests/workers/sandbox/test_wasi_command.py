"""WASI command modules as tools, with real wasmtime: the C example and hand-written WAT guests."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from bus.subjects import Subjects
from schemas.codec import decode, decode_json
from schemas.config import ComponentSettings, LimitsSettings, Settings, load_settings
from schemas.errors import ConfigError
from schemas.wire import CallToolResult
from tests.conftest import TESTKIT_WAT, deadline_in
from tests.conftest import text as text_of
from tests.workers.conftest import start_worker
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError, UnknownTool
from workers.sandbox.wasi_command import STDOUT_LIMIT_BYTES, LoadedCommand
from workers.sources import load_components, load_one
from workers.toolchains.clang import build_c_command
from workers.toolchains.errors import BuildError

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
COMMAND_TOML = EXAMPLES_DIR / "command.toml"

ANY_OBJECT: dict[str, Any] = {"type": "object"}


# -- guests ---------------------------------------------------------------------------------
def wat_bytes(data: bytes) -> str:
    """``data`` as a WAT string literal (every byte escaped, so quotes and newlines are safe)."""
    return '"' + "".join(f"\\{b:02x}" for b in data) + '"'


def writer_wat(stdout: bytes = b"", stderr: bytes = b"", exit_code: int | None = None, repeat: int = 1) -> str:
    """A command that writes fixed bytes to stdout (``repeat`` times) and stderr, then exits."""
    exit_call = "" if exit_code is None else f"(call $proc_exit (i32.const {exit_code}))"
    return f"""(module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
      (memory (export "memory") 2)
      (data (i32.const 1024) {wat_bytes(stdout)})
      (data (i32.const 65536) {wat_bytes(stderr)})
      (func $write (param $fd i32) (param $at i32) (param $len i32)
        (i32.store (i32.const 0) (local.get $at))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
      (func (export "_start") (local $i i32)
        (loop $again
          (call $write (i32.const 1) (i32.const 1024) (i32.const {len(stdout)}))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get $i) (i32.const {repeat}))))
        (call $write (i32.const 2) (i32.const 65536) (i32.const {len(stderr)}))
        {exit_call}))"""


ECHO_WAT = """(module
  ;; Copies stdin to stdout: shows exactly what the guest was given.
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $n i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $more
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (local.get $n) (then
        (i32.store (i32.const 16) (i32.const 1024))
        (i32.store (i32.const 20) (local.get $n))
        (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
        (br $more))))))"""

NOTHING_GRANTED_WAT = """(module
  ;; Exits 0 with "{}" only when it sees no environment variable and no preopened directory.
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{}")
  (func (export "_start")
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.load (i32.const 0)) (then (call $proc_exit (i32.const 3))))
    ;; fd 3 is the first preopen when there is one; 8 = EBADF means there is none.
    (if (i32.ne (call $fd_prestat_get (i32.const 3) (i32.const 16)) (i32.const 8))
      (then (call $proc_exit (i32.const 4))))
    (i32.store (i32.const 32) (i32.const 100))
    (i32.store (i32.const 36) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))"""

TRAP_WAT = """(module
  (memory (export "memory") 1)
  (func (export "_start") unreachable))"""

LOOP_WAT = """(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"""


def wat_file(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.wat"
    path.write_text(text)
    return path


def load_wat(
    engine_host: EngineHost,
    cache_dir: Path,
    tmp_path: Path,
    text: str,
    *,
    name: str = "cmd",
    output_schema: dict[str, Any] | None = None,
) -> LoadedCommand:
    path = wat_file(tmp_path, name, text)
    settings = ComponentSettings(
        name=name, path=path, kind="command", input_schema=ANY_OBJECT, output_schema=output_schema
    )
    return LoadedCommand.load(engine_host, settings, path, cache_dir)


@pytest.fixture(scope="session")
def wordcount_settings() -> ComponentSettings:
    """The wordcount entry of examples/command.toml: the documented config is the tested one."""
    [settings] = [c for c in load_settings(COMMAND_TOML).components if c.name == "wordcount"]
    return settings


@pytest.fixture(scope="session")
def wordcount(
    engine_host: EngineHost, cache_dir: Path, wordcount_wasm: Path, wordcount_settings: ComponentSettings
) -> LoadedCommand:
    """The C example loaded as a worker loads it (built from ``source`` through the build cache)."""
    loaded = load_one(wordcount_settings, engine_host, cache_dir)
    assert isinstance(loaded, LoadedCommand)
    return loaded


# -- config ---------------------------------------------------------------------------------
def write_config(tmp_path: Path, component: str) -> Path:
    (tmp_path / "m.wat").write_text(TRAP_WAT)
    path = tmp_path / "toolbus.toml"
    path.write_text(f'[[components]]\nname = "m"\npath = "m.wat"\n{component}\n')
    return path


@pytest.mark.parametrize(
    ("component", "message"),
    [
        ('kind = "command"', "components[0]: input_schema: required for kind = 'command'"),
        (
            'kind = "command"\ninput_schema = { type = "array" }',
            "components[0]: input_schema: must be an object schema",
        ),
        (
            'kind = "command"\ninput_schema = { type = "object", properties = { a = { type = 5 } } }',
            "components[0]: input_schema: not a valid JSON Schema",
        ),
        (
            'kind = "command"\ninput_schema = { type = "object" }\noutput_schema = { type = "nope" }',
            "components[0]: output_schema: not a valid JSON Schema",
        ),
        ('input_schema = { type = "object" }', "components[0]: input_schema: only for kind = 'command'"),
        ('kind = "command"\ninput_schema = { type = "object" }\nworld = "w"', "components[0]: world: only for"),
        (
            'kind = "command"\ninput_schema = { type = "object" }\nreuse_instances = true',
            "components[0]: reuse_instances: only for kind = 'component'",
        ),
        ('kind = "script"', "components[0].kind"),
    ],
    ids=[
        "no-input-schema",
        "not-object",
        "invalid-schema",
        "invalid-output",
        "schema-on-component",
        "world",
        "reuse",
        "kind",
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path: Path, component: str, message: str) -> None:
    path = write_config(tmp_path, component)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_the_example_config_declares_a_command(wordcount_settings: ComponentSettings) -> None:
    assert wordcount_settings.kind == "command"
    assert wordcount_settings.source == EXAMPLES_DIR / "wordcount"
    assert wordcount_settings.input_schema is not None
    assert wordcount_settings.input_schema["required"] == ["text"]


# -- the C example --------------------------------------------------------------------------
def test_wordcount_is_one_tool_described_by_config(
    wordcount: LoadedCommand, wordcount_settings: ComponentSettings
) -> None:
    [tool] = wordcount.tools
    assert tool.name == wordcount.name == "wordcount"
    assert tool.description == wordcount_settings.description
    assert tool.input_schema == wordcount_settings.input_schema
    assert tool.output_schema == wordcount_settings.output_schema
    assert tool.digest == wordcount.digest
    assert tool.digest.startswith("sha256:")


def test_wordcount_counts(wordcount: LoadedCommand) -> None:
    result = wordcount.call("wordcount", {"text": 'hello world\n"quoted"\té 😀'}, timeout_s=5)
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"lines": 2, "words": 5, "characters": 24}
    assert text_of(result) == '{"lines":2,"words":5,"characters":24}'


def test_wordcount_bad_input_is_an_error_with_stderr(wordcount: LoadedCommand) -> None:
    # Direct callers are validated by the worker; call() itself passes whatever it is given.
    result = wordcount.call("wordcount", {"other": [1, {"x": "}"}]}, timeout_s=5)
    assert result.is_error
    assert text_of(result).startswith("guest exited with code 2\nstderr:\nwordcount: missing argument")


def test_c_build_is_cached_by_content(c_toolchain: str, cache_dir: Path, wordcount_wasm: Path, tmp_path: Path) -> None:
    assert build_c_command(EXAMPLES_DIR / "wordcount", cache_dir) == wordcount_wasm  # a hit: same path
    project = tmp_path / "proj"
    project.mkdir()
    (project / "main.c").write_text('#include <stdio.h>\nint main(void) { puts("1"); return 0; }\n')
    first = build_c_command(project, cache_dir)
    (project / "main.c").write_text('#include <stdio.h>\nint main(void) { puts("2"); return 0; }\n')
    second = build_c_command(project, cache_dir)
    assert first != second and first.is_file() and second.is_file()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no scratch files left


def test_c_build_errors_carry_the_compiler_message(c_toolchain: str, cache_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "main.c").write_text("int main(void) { return undeclared; }\n")
    with pytest.raises(BuildError, match="undeclared"):
        build_c_command(tmp_path, cache_dir)
    with pytest.raises(BuildError, match="is not a directory"):
        build_c_command(tmp_path / "main.c", cache_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildError, match=r"holds no \.c file"):
        build_c_command(empty, cache_dir)


# -- outcomes -------------------------------------------------------------------------------
def test_stdin_holds_exactly_the_json_arguments(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    echo = load_wat(engine_host, cache_dir, tmp_path, ECHO_WAT, name="echo")
    arguments = {"text": 'ü\n"x"', "n": [1, 2.5, None], "deep": {"k": True}}
    result = echo.call("echo", arguments, timeout_s=5)
    assert not result.is_error, text_of(result)
    assert result.structured_content == arguments


def test_the_sandbox_grants_no_environment_and_no_directories(
    engine_host: EngineHost, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLBUS_TEST_SECRET", "hunter2")
    probe = load_wat(engine_host, cache_dir, tmp_path, NOTHING_GRANTED_WAT, name="probe")
    result = probe.call("probe", {}, timeout_s=5)
    assert not result.is_error, text_of(result)
    assert result.structured_content == {}


def test_non_zero_exit_is_an_error_with_stderr(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    cmd = load_wat(engine_host, cache_dir, tmp_path, writer_wat(b'{"partial": 1}', b"no such customer\n", exit_code=7))
    result = cmd.call("cmd", {}, timeout_s=5)
    assert result.is_error
    assert text_of(result) == "guest exited with code 7\nstderr:\nno such customer"


def test_explicit_exit_zero_is_success(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    cmd = load_wat(engine_host, cache_dir, tmp_path, writer_wat(b"[1, 2]\n", b"a warning\n", exit_code=0))
    result = cmd.call("cmd", {}, timeout_s=5)
    assert not result.is_error
    assert result.structured_content == [1, 2]
    assert text_of(result) == "[1, 2]"


@pytest.mark.parametrize("stdout", [b"hello", b"", b'{"a": 1', b"\xff\xfe"], ids=["text", "empty", "cut", "binary"])
def test_output_that_is_not_json_is_an_error(
    engine_host: EngineHost, cache_dir: Path, tmp_path: Path, stdout: bytes
) -> None:
    cmd = load_wat(engine_host, cache_dir, tmp_path, writer_wat(stdout, b"oops"))
    result = cmd.call("cmd", {}, timeout_s=5)
    assert result.is_error
    assert text_of(result).startswith("output is not valid JSON")
    assert text_of(result).endswith("stderr:\noops")


def test_output_is_checked_against_the_output_schema(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    good = load_wat(engine_host, cache_dir, tmp_path, writer_wat(b'{"n": 3}'), name="good", output_schema=schema)
    assert good.call("good", {}, timeout_s=5).structured_content == {"n": 3}
    bad = load_wat(engine_host, cache_dir, tmp_path, writer_wat(b'{"n": "3"}'), name="bad", output_schema=schema)
    result = bad.call("bad", {}, timeout_s=5)
    assert result.is_error
    assert text_of(result) == "output does not match the output schema: n: '3' is not of type 'integer'"


def test_a_trap_is_an_error(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    result = load_wat(engine_host, cache_dir, tmp_path, TRAP_WAT).call("cmd", {}, timeout_s=5)
    assert result.is_error
    assert text_of(result).startswith("guest trapped: ")
    assert "unreachable" in text_of(result)


def test_an_endless_loop_times_out_and_the_worker_keeps_serving(
    engine_host: EngineHost, cache_dir: Path, tmp_path: Path, wordcount: LoadedCommand
) -> None:
    looper = load_wat(engine_host, cache_dir, tmp_path, LOOP_WAT, name="looper")
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = time.monotonic()
        looping = pool.submit(looper.call, "looper", {}, 0.3)
        # Guests release the GIL: the other thread's calls go on while the loop spins.
        for _ in range(20):
            assert pool.submit(wordcount.call, "wordcount", {"text": "a b"}, 5).result().structured_content == {
                "lines": 1,
                "words": 2,
                "characters": 3,
            }
        result = looping.result(timeout=10)
    assert result.is_error
    assert (
        text_of(result)
        == "timed out after 0.3 s, the time its caller's deadline left (the tool's own time limit is 30 s)"
    )
    assert time.monotonic() - started < 3
    assert not wordcount.call("wordcount", {"text": "still here"}, timeout_s=5).is_error


def test_the_tool_limits_apply_to_commands(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    path = wat_file(tmp_path, "looper", LOOP_WAT)

    def load(limits: dict[str, Any]) -> LoadedCommand:
        settings = ComponentSettings(
            name="looper", path=path, kind="command", input_schema=ANY_OBJECT, limits=LimitsSettings(**limits)
        )
        return LoadedCommand.load(engine_host, settings, path, cache_dir, defaults=LimitsSettings(memory_mib=8))

    short = load({"timeout_s": 0.2})
    assert short.limits.memory_mib == 8  # the worker's default, merged
    assert text_of(short.call("looper", {}, timeout_s=30)) == "exceeded its time limit of 0.2 s"

    metered = load({"fuel": 100_000})
    assert metered.engine_host.consume_fuel
    assert text_of(metered.call("looper", {}, timeout_s=30)) == "ran out of fuel (limit: 100,000 units)"

    big = wat_file(tmp_path, "big", '(module (memory (export "memory") 200) (func (export "_start")))')  # 12.5 MiB
    with pytest.raises(ComponentLoadError, match="cannot be instantiated"):
        LoadedCommand.load(
            engine_host,
            ComponentSettings(name="big", path=big, kind="command", input_schema=ANY_OBJECT),
            big,
            cache_dir,
            defaults=LimitsSettings(memory_mib=8),
        )


def test_a_flood_on_stdout_is_cut_and_reported(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    chunk = b"x" * 65536
    flood = load_wat(engine_host, cache_dir, tmp_path, writer_wat(chunk, repeat=64))  # 4 MiB
    result = flood.call("cmd", {}, timeout_s=10)
    assert result.is_error
    assert text_of(result) == f"output is larger than {STDOUT_LIMIT_BYTES} bytes"


def test_concurrent_calls_do_not_mix_their_streams(engine_host: EngineHost, cache_dir: Path, tmp_path: Path) -> None:
    echo = load_wat(engine_host, cache_dir, tmp_path, ECHO_WAT, name="echo")
    errors: list[str] = []

    def caller(n: int) -> None:
        for i in range(50):
            arguments = {"caller": n, "i": i}
            result = echo.call("echo", arguments, timeout_s=5)
            if result.structured_content != arguments:
                errors.append(f"{arguments} -> {text_of(result)}")

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_unknown_tool_name_raises(wordcount: LoadedCommand) -> None:
    with pytest.raises(UnknownTool, match="no tool 'other'"):
        wordcount.call("other", {}, timeout_s=5)


# -- load checks ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '(module (import "env" "secret" (func)) (memory (export "memory") 1) (func (export "_start")))',
            "imports `env::secret`, which the sandbox does not grant",
        ),
        (
            '(module (import "wasi_snapshot_preview1" "no_such_call" (func)) (func (export "_start")))',
            "cannot be linked",
        ),
        ('(module (func (export "main")))', "exports no `_start: () -> ()`"),
        ('(module (func (export "_start") (param i32)))', "exports no `_start: () -> ()`"),
        ('(module (func $s unreachable) (start $s) (func (export "_start")))', "cannot be instantiated"),
        ("(component)", "is a component, not a core module; use kind = 'component'"),
        ("(module", "not valid WAT"),
    ],
    ids=[
        "foreign-import",
        "unknown-wasi-call",
        "no-start",
        "start-takes-args",
        "start-section-traps",
        "component",
        "bad-wat",
    ],
)
def test_modules_that_cannot_serve_fail_at_load_with_a_named_reason(
    engine_host: EngineHost, cache_dir: Path, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ComponentLoadError, match="cmd") as caught:
        load_wat(engine_host, cache_dir, tmp_path, text)
    assert message in str(caught.value)


def test_a_second_load_comes_from_the_compile_cache(engine_host: EngineHost, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_wat(engine_host, cache, tmp_path, ECHO_WAT)
    [entry] = (cache / "compiled").glob("*.cwasm")  # beside it, its build lock (workers.cache_lock)
    assert entry.name.endswith(".module.cwasm")
    written = entry.stat().st_mtime_ns
    assert load_wat(engine_host, cache, tmp_path, ECHO_WAT).call("cmd", {"a": 1}, 5).structured_content == {"a": 1}
    assert entry.stat().st_mtime_ns == written


def test_the_runner_loads_each_kind(
    engine_host: EngineHost, cache_dir: Path, tmp_path: Path, wordcount_wasm: Path
) -> None:
    settings = Settings(
        cache_dir=cache_dir,
        components=[
            ComponentSettings(name="kit", path=TESTKIT_WAT),
            ComponentSettings(name="wc", path=wordcount_wasm, kind="command", input_schema=ANY_OBJECT),
        ],
    )
    kit, wc = load_components(settings, engine_host)
    assert isinstance(kit, LoadedComponent)
    assert isinstance(wc, LoadedCommand)
    assert [t.name for t in wc.tools] == ["wc"]
    assert wc.call("wc", {"text": "one two"}, timeout_s=5).structured_content == {
        "lines": 1,
        "words": 2,
        "characters": 7,
    }


# -- on the bus -----------------------------------------------------------------------------
async def test_a_worker_serves_a_command_next_to_a_component_over_nats(
    nc: NatsClient,
    subjects: Subjects,
    kit: LoadedComponent,
    wordcount: LoadedCommand,
    engine_host: EngineHost,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    looper = load_wat(engine_host, cache_dir, tmp_path, LOOP_WAT, name="looper")
    service = await start_worker(nc, subjects, kit, wordcount, looper, concurrency=2)
    try:
        # Exactly what `nats req PREFIX.call.wordcount '{"text": "…"}'` sends: the body and nothing else.
        reply = await nc.request(subjects.call("wordcount"), b'{"text": "one two\\nthree"}', timeout=5)
        assert decode_json(reply.data) == {
            "content": [{"type": "text", "text": '{"lines":2,"words":3,"characters":13}'}],
            "structuredContent": {"lines": 2, "words": 3, "characters": 13},
            "isError": False,
        }

        # The worker checks the configured input schema before the guest runs.
        reply = await nc.request(subjects.call("wordcount"), b'{"txt": "x"}', timeout=5)
        result = decode(reply.data, CallToolResult)
        assert result.is_error
        assert text_of(result).startswith("invalid arguments: ")

        # A runaway command times out on the call's deadline while other calls are answered.
        looping = asyncio.ensure_future(nc.request(subjects.call("looper"), b"{}", timeout=5, headers=deadline_in(0.5)))
        for n in range(10):
            reply = await nc.request(subjects.call("kit_add"), f'{{"a": {n}, "b": 1}}'.encode(), timeout=5)
            assert decode(reply.data, CallToolResult).structured_content == n + 1
            reply = await nc.request(subjects.call("wordcount"), b'{"text": "x"}', timeout=5)
            assert not decode(reply.data, CallToolResult).is_error
        result = decode((await looping).data, CallToolResult)
        assert result.is_error
        assert text_of(result).startswith("timed out after ")

        reply = await nc.request(subjects.call("wordcount"), b'{"text": "still serving"}', timeout=5)
        assert decode(reply.data, CallToolResult).structured_content == {"lines": 1, "words": 2, "characters": 13}
    finally:
        await service.stop(grace_s=1)
