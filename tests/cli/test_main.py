"""The ``toolbus`` console script: verbs, config errors, unreachable NATS."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus.embedded import free_port
from cli.main import VERB_MODULES, build_parser, verb_named
from cli.main import VERBS as VERB_TABLE
from cli.up import _worker_cores, _worker_metrics_ports
from schemas.config import Settings, WorkerSettings

VERBS = ["up", "gateway", "worker", "registry", "tools", "call"]


def toolbus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=60, check=False
    )


def loaded_after(statements: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``statements`` (from the
    checkout's root): a package counts once any module of it is imported."""
    probe = f"import sys; {statements}; print(repr(sorted(m for m in {modules!r} if m in sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    # The last line: what the statements log (structlog prints to stdout until configured) comes first.
    listed: list[str] = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    return listed


def test_every_verb_is_registered() -> None:
    parser = build_parser()
    for verb in VERBS:
        assert parser.parse_args([verb, *(["t"] if verb == "call" else [])]).command == verb


@pytest.mark.parametrize("verb", ["worker", "registry", "gateway", "up", "tools"])
def test_a_config_mistake_exits_2_naming_file_field_and_problem(tmp_path: Path, verb: str) -> None:
    config = tmp_path / "toolbus.toml"
    config.write_text('[worker]\nconcurrency = "many"\n', encoding="utf-8")
    result = toolbus(verb, "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "worker.concurrency" in result.stderr
    assert "valid integer" in result.stderr


def test_a_component_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    config = tmp_path / "toolbus.toml"
    config.write_text('[[components]]\nname = "calc"\npath = "missing.wasm"\n', encoding="utf-8")
    result = toolbus("worker", "--config", str(config))
    assert result.returncode == 2
    assert "components[0].path" in result.stderr and "missing.wasm" in result.stderr


def test_a_toml_syntax_error_is_reported_with_the_file(tmp_path: Path) -> None:
    config = tmp_path / "toolbus.toml"
    config.write_text("[worker\n", encoding="utf-8")
    result = toolbus("worker", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr and "not valid TOML" in result.stderr


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "toolbus.toml"
    config.write_text("[gateway]\nprot = 3001\n", encoding="utf-8")
    result = toolbus("gateway", "--config", str(config))
    assert result.returncode == 2
    assert "gateway.prot" in result.stderr


def test_unreachable_nats_is_one_line_naming_the_refusal_and_a_hint() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = toolbus("tools", "--nats", url)
    assert result.returncode == 1
    # Not the ten reconnect warnings nats-py's callbacks used to log, nor "timed out" for a refusal.
    assert result.stderr.splitlines() == [
        f"toolbus: cannot reach NATS at {url}: connection refused",
        "hint: is `toolbus up` (or a NATS server) running? Name another with --nats URL or $TOOLBUS_NATS_URL.",
    ]


def test_toolbus_nats_url_names_the_server_for_every_verb() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "tasks", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TOOLBUS_NATS_URL": url},
    )
    assert result.returncode == 1
    assert f"cannot reach NATS at {url}" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--nats", "nats://h:1", "--config", "t.toml", "tasks", "submit", "calc_add", "{}"],
        ["tasks", "submit", "calc_add", "{}", "--nats", "nats://h:1", "--config", "t.toml"],
        ["tasks", "--nats", "nats://h:1", "submit", "--config", "t.toml", "calc_add", "{}"],
    ],
)
def test_global_options_go_before_or_after_the_verb(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.nats, args.settings_file, args.tool) == ("nats://h:1", Path("t.toml"), "calc_add")


def test_a_verb_s_default_does_not_overwrite_an_option_given_before_it() -> None:
    args = build_parser().parse_args(["--nats", "nats://h:1", "tools"])
    assert args.nats == "nats://h:1"
    args = build_parser().parse_args(["tasks", "--json", "list"])
    assert args.json is True


def test_publish_names_the_tools_settings_tool_config_and_the_deployment_s_config() -> None:
    args = build_parser().parse_args(
        ["publish", "x.wasm", "--name", "p", "--version", "1.0.0", "--tool-config", "tool.toml", "--config", "t.toml"]
    )
    assert (args.tool_config, args.settings_file, args.version) == (Path("tool.toml"), Path("t.toml"), "1.0.0")


def test_version() -> None:
    result = toolbus("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("toolbus ")


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    # The reader is gone before the command writes (`toolbus nats-config | head -0`).
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "nats-config"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert result.returncode == 141
    assert result.stderr == ""  # no BrokenPipeError traceback


def test_call_refuses_arguments_that_are_not_json() -> None:
    result = toolbus("call", "--nats", f"nats://127.0.0.1:{free_port()}", "calc_add", "{a: 1}")
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


def test_building_the_parser_loads_no_role_machinery() -> None:
    # Every `toolbus` command builds the whole parser: a worker must not pay for the mcp SDK
    # (and a gateway not for wasmtime) just to start.
    roles = ("mcp", "wasmtime", "starlette", "uvicorn")
    assert loaded_after("from cli.main import build_parser; build_parser()", roles) == []


def test_a_worker_loads_nothing_its_role_does_not_use() -> None:
    # What a worker process imports before it serves (cli.main, then workers.runner): a restart
    # pays for each module. The registry's machinery, the OCI client and its cryptography are
    # other verbs'; metrics and OpenTelemetry (its API too) load only when configured.
    unused = ("registry.service", "registry.oci", "cryptography", "prometheus_client", "opentelemetry")
    assert loaded_after("from cli.main import build_parser; build_parser(); import workers.runner", unused) == []
    # Reading its own credentials, a worker does not build the permission tables of every role
    # (only `toolbus up` writes credentials, and `toolbus nats-config` prints the tables).
    start = "from cli.main import build_parser; build_parser(['worker']); import bus.credentials, workers.runner"
    assert loaded_after(start, ("bus.permissions",)) == []


def test_a_child_of_up_imports_no_nats_client_before_its_settings() -> None:
    # Every child of `toolbus up` asks to die with it (cli.lifecycle, through bus.embedded) before
    # it reads its settings; a worker imports nats-py only once its component loads are under
    # way (cli.worker's `begin`), so that they run beside that import.
    assert loaded_after("from cli.lifecycle import stop_with_supervisor; import bus.embedded", ("nats",)) == []


def test_the_verb_table_names_the_module_that_registers_each_verb() -> None:
    # `toolbus VERB` imports only VERBS[VERB]'s module: a verb missing from the table, or placed
    # in the wrong module, would not parse.
    import argparse
    import importlib

    registered = {}
    for name in VERB_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"cli.{name}").register(subparsers)
        registered.update(dict.fromkeys(subparsers.choices, name))
    assert registered == VERB_TABLE


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["worker", "--config", "w.toml"], "worker"),
        (["--config", "worker", "tools"], "tools"),  # a config file named like a verb is not the verb
        (["--nats", "nats://h:1", "--conf", "up", "call", "t"], "call"),  # argparse's prefix of --config
        (["--config=t.toml", "worker"], "worker"),
        (["--version"], None),
        (["--help"], None),
        (["wroker"], None),  # a typo: the whole parser names every verb in its error
        (["--", "worker"], None),
    ],
)
def test_the_verb_is_found_before_parsing(argv: list[str], verb: str | None) -> None:
    assert verb_named(argv) == verb


def test_a_partial_parser_parses_its_verb_as_the_whole_one_does() -> None:
    argv = ["--nats", "nats://h:1", "tasks", "submit", "--config", "t.toml", "calc_add", "{}"]
    assert vars(build_parser(argv).parse_args(argv)).keys() == vars(build_parser().parse_args(argv)).keys()
    assert build_parser(argv).parse_args(argv).tool == "calc_add"


def test_a_worker_start_loads_no_other_role_and_no_json_schema_library() -> None:
    # A restart pays for every module imported before the worker serves (issue 17: ready in
    # 200 ms). Parsing `toolbus worker`, importing the worker and loading a component with a
    # tool (its argument validators compiled) must not import the gateway's stack, the other
    # verbs' modules, jsonschema (a validator loads it only for arguments its quick check
    # cannot prove valid), pydantic (settings load with msgspec; pydantic only words a mistake)
    # or http.client (a guest granted HTTP loads it at its first fetch).
    heavy = (
        "http.client",
        "mcp",
        "starlette",
        "uvicorn",
        "jsonschema",
        "pydantic",
        "gateway",
        "registry",
        "cli.up",
        "cli.audit",
        "cli.tools",
    )
    start = (
        "import tempfile; from pathlib import Path; from cli.main import build_parser; "
        "build_parser(['worker']).parse_args(['worker']); import workers.runner; "
        "from schemas.config import load_settings; load_settings(); "
        "from schemas.config import ComponentSettings; from workers.sandbox import EngineHost; "
        "from workers.sources import load_one; engine = EngineHost(); "
        "entry = ComponentSettings(name='kit', path=Path('examples/wat/testkit.wat')); "
        "loaded = load_one(entry, engine, Path(tempfile.mkdtemp())); assert loaded.tools"
    )
    assert loaded_after(start, heavy) == []


def test_a_verb_s_help_loads_neither_the_settings_nor_the_bus() -> None:
    # `toolbus worker --help` (and a usage error) parses only: no pydantic, nats-py, wasmtime.
    parse = "from cli.main import build_parser; build_parser(['worker'])"
    assert loaded_after(parse, ("pydantic", "nats", "wasmtime", "structlog", "asyncio")) == []


def test_garbage_collection_paused_for_the_start_is_on_again_when_a_verb_runs() -> None:
    # cli.main pauses cyclic collection while a process starts; every verb but the worker (which
    # resumes it itself once connected: workers.runner) runs with it on again.
    probe = "import gc, sys; from cli.main import main; main(['nats-config']); print(gc.isenabled(), file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stderr.splitlines()[-1] == "True"  # after nats-config's own notes
    assert build_parser(["worker"]).parse_args(["worker"]).resumes_gc is True
    assert not hasattr(build_parser(["tools"]).parse_args(["tools"]), "resumes_gc")


@pytest.mark.parametrize(("cores", "processes", "concurrency"), [(1, 1, 2), (2, 2, 2), (8, 8, 8), (32, 32, 32)])
def test_up_runs_a_worker_process_per_core_with_a_guest_per_core_by_default(
    monkeypatch: pytest.MonkeyPatch, cores: int, processes: int, concurrency: int
) -> None:
    monkeypatch.setattr("schemas.config.usable_cores", lambda: cores)
    assert (WorkerSettings().processes, WorkerSettings().concurrency) == (processes, concurrency)
    assert WorkerSettings(processes=3).processes == 3  # pinned in config ([worker] processes)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_the_cores_counted_are_those_the_process_may_run_on() -> None:
    # A container's cpuset or a pinned worker: the machine's core count would oversubscribe it.
    core = min(os.sched_getaffinity(0))
    probe = (
        f"import os; os.sched_setaffinity(0, {{{core}}}); from schemas.config import WorkerSettings as W; "
        "print(W().processes, W().concurrency)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["1", "2"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this system")
def test_up_pins_a_worker_to_each_core_only_when_every_core_has_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5})

    def cores(workers: int, pin: bool = True) -> list[int | None]:
        return _worker_cores(Settings(worker=WorkerSettings(pin_to_cores=pin)), workers)

    assert cores(2) == [2, 5]
    assert cores(3) == [2, 5, 2]  # --cluster's three workers
    assert cores(1) == [None]  # alone it may use both cores
    assert cores(2, pin=False) == [None, None]


@pytest.mark.parametrize("core", ["-1", "4096"])
def test_a_worker_refuses_a_core_it_may_not_run_on(core: str) -> None:
    result = toolbus("worker", "--cpu", core, "--nats", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert f"--cpu {core}: not a core this process may run on" in result.stderr


def test_up_refuses_fewer_than_one_worker() -> None:
    result = toolbus("up", "--workers", "0", "--nats", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "--workers: at least 1" in result.stderr


def test_each_worker_up_runs_gets_a_metrics_port_of_its_own() -> None:
    # Two processes cannot listen on one port: with [worker] metrics_port = 9100 and three workers,
    # two of them used to serve no metrics at all.
    def ports(port: int | None, workers: int) -> list[int | None]:
        return _worker_metrics_ports(Settings(worker=WorkerSettings(metrics_port=port)), workers)

    assert ports(9100, 3) == [9100, 9101, 9102]
    assert ports(0, 2) == [0, 0]  # each picks a free one
    assert ports(None, 2) == [None, None]
