"""The ``toolbus`` console script: verbs, config errors, unreachable NATS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bus.embedded import free_port
from cli.main import build_parser

VERBS = ["up", "gateway", "worker", "registry", "tools", "call"]


def toolbus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=60, check=False
    )


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


def test_unreachable_nats_is_a_clear_error() -> None:
    result = toolbus("tools", "--nats", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach NATS" in result.stderr


def test_call_refuses_arguments_that_are_not_json() -> None:
    result = toolbus("call", "--nats", f"nats://127.0.0.1:{free_port()}", "calc_add", "{a: 1}")
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


def test_building_the_parser_loads_no_role_machinery() -> None:
    # Every `toolbus` command builds the whole parser: a worker must not pay for the mcp SDK
    # (and a gateway not for wasmtime) just to start.
    probe = (
        "import sys; from cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('mcp', 'wasmtime', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
