"""A new user's path in each language: ``toolbus init`` → the template's own test (``toolbus run``,
no NATS) → ``toolbus publish DIR`` to a running system → the tool called over MCP. Every toolchain
(componentize-py, componentize-js from npm, clang from Debian) is installed by toolbus on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

from tests.conftest import eventually
from tests.e2e.conftest import RunningSystem, toolbus

LANGUAGES = ("python", "javascript", "c")
BUILD_TIMEOUT_S = 600
"""A cold JavaScript build installs componentize-js (~25 s) and builds (~40-60 s on 2 busy cores)."""


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        cwd=cwd,
    )


def init(tmp_path: Path, language: str) -> Path:
    name = f"hello-{language}"
    done = cli("init", name, "--lang", language, "--dir", str(tmp_path / name))
    assert done.returncode == 0, done.stderr
    return tmp_path / name


@pytest.mark.slow
@pytest.mark.parametrize("language", LANGUAGES)
def test_each_template_passes_its_own_test(tmp_path: Path, language: str) -> None:
    project = init(tmp_path, language)
    assert {"README.md", "test.sh"} <= {path.name for path in project.iterdir()}
    # The template's test calls `toolbus`: the one installed beside this interpreter.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(project / "test.sh")], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hello, Ada!" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_project_published_from_its_directory_is_called_over_mcp(
    system: RunningSystem, tmp_path: Path, language: str
) -> None:
    project = init(tmp_path, language)
    tool = project.name if language == "c" else f"{project.name}_hello"
    published = toolbus(system, "publish", str(project), "--version", "0.1.0")  # built, named after its directory
    assert f"published {project.name} 0.1.0" in published
    async with Client(system.mcp_url, mode="auto") as client:

        async def listed() -> bool:
            return tool in {t.name for t in (await client.list_tools()).tools}

        await eventually(listed, timeout_s=60, interval_s=0.2, what=f"{tool} never listed")
        result = await client.call_tool(tool, {"name": "Ada"})
        assert not result.is_error, result
        assert result.structured_content == "Hello, Ada!"
    toolbus(system, "retire", project.name)


@pytest.mark.parametrize("name", ["My_Tool", "my-tool\n"])
def test_init_refuses_a_name_that_is_not_kebab_case(tmp_path: Path, name: str) -> None:
    done = cli("init", name, "--dir", str(tmp_path / "x"))
    assert done.returncode == 2 and "kebab-case" in done.stderr
    assert not (tmp_path / "x").exists()


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    done = cli("init", "tool", "--dir", str(tmp_path))
    assert done.returncode == 1 and "not empty" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_run_names_the_tools_a_project_has(tmp_path: Path) -> None:
    project = init(tmp_path, "c")
    done = cli("run", str(project), "nope", "{}")
    assert done.returncode == 2 and "hello-c" in done.stderr


def test_a_directory_that_is_no_project_is_a_clear_error(tmp_path: Path) -> None:
    done = cli("build", str(tmp_path))
    assert done.returncode == 1
    assert "expected one world" in done.stderr


def test_publishing_a_file_still_needs_a_name(tmp_path: Path) -> None:
    wasm = tmp_path / "x.wasm"
    wasm.write_bytes(b"\0asm")
    done = cli("publish", str(wasm), "--version", "1.0.0", "--nats", "nats://127.0.0.1:1")
    assert done.returncode == 1 and "--name: required" in done.stderr
