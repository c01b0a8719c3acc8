"""``toolbus stdio`` as a desktop client meets it: the mcp SDK's stdio client launches it, in both
eras, against a real ``toolbus up`` whose gateway requires an API key and applies a policy."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from bus.embedded import free_port
from tests.conftest import TESTKIT_WAT
from tests.e2e.conftest import EXAMPLES, start_up, stop_up

KEY = "stdio-test-key-0123456789"
MODES = ("legacy", "auto")
"""``legacy``: a 2025-11-25 session over stdio; ``auto``: the client negotiates 2026-07-28."""


@pytest.fixture(scope="module")
def secured_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``toolbus up`` with an API key that may call the testkit's tools and ``echo_region``, nothing else."""
    directory = tmp_path_factory.mktemp("stdio")
    port = free_port()
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    config = directory / "toolbus.toml"
    config.write_text(
        f"""state_dir = "{directory / "state"}"
[gateway]
port = {port}
[auth]
resource = "http://127.0.0.1:{port}/mcp"
[auth.api_keys.desktop]
sha256 = "{digest}"
[[auth.policy]]
subjects = ["key:desktop"]
tools = ["kit_*", "echo_region"]
[[components]]
name = "kit"
path = "{TESTKIT_WAT}"
[[components]]
name = "hidden"
path = "{TESTKIT_WAT}"
[[components]]
name = "echo_region"
kind = "command"
path = "{EXAMPLES / "wat" / "echo.wat"}"
[components.input_schema]
type = "object"
required = ["region"]
properties.region = {{ type = "string", "x-mcp-header" = "Region" }}
""",
        encoding="utf-8",
    )
    process, _ = start_up(config, "--nats-port", str(free_port()), log_path=directory / "up.log")
    yield f"http://127.0.0.1:{port}/mcp"
    assert stop_up(process) == 0, (directory / "up.log").read_text()[-3000:]


def bridge(url: str, *, token: str | None) -> StdioServerParameters:
    """What a desktop client's config says: run ``toolbus stdio``, the token in its environment."""
    env = {**os.environ, "TOOLBUS_MCP_URL": url}
    env.pop("TOOLBUS_TOKEN", None)
    if token is not None:
        env["TOOLBUS_TOKEN"] = token
    return StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "stdio"], env=env)


@pytest.mark.parametrize("mode", MODES)
async def test_a_stdio_client_lists_and_calls_the_tools_its_key_may_use(secured_url: str, mode: str) -> None:
    async with Client(bridge(secured_url, token=KEY), mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "kit_add" in names and "echo_region" in names
        assert not any(name.startswith("hidden_") for name in names)  # the gateway's policy holds

        added = await client.call_tool("kit_add", {"a": 2, "b": 3})
        assert not added.is_error and added.content[0].text == "5"  # type: ignore[union-attr]
        # 2026-07-28 needs `Mcp-Param-Region` mirrored from the argument: the relay adds it.
        echoed = await client.call_tool("echo_region", {"region": "eu-west"})
        assert not echoed.is_error and '"eu-west"' in echoed.content[0].text  # type: ignore[union-attr]

        with pytest.raises(MCPError):  # not in the key's policy: refused by the gateway, relayed as is
            await client.call_tool("hidden_add", {"a": 1, "b": 1})


@pytest.mark.parametrize("mode", MODES)
async def test_without_the_token_the_gateway_refuses_the_desktop_client(secured_url: str, mode: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 (the 401 surfaces as the SDK's connection error of each era)
        async with Client(bridge(secured_url, token=None), mode=mode) as client:
            await client.list_tools()


def test_the_relay_writes_nothing_but_json_rpc_on_stdout(secured_url: str, tmp_path: Path) -> None:
    import subprocess

    request = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    request += b'"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\nnot json\n'
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "stdio", "--url", secured_url, "--token", KEY],
        input=request,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.decode().splitlines()
    assert '"protocolVersion":"2025-11-25"' in line and '"id":1' in line
    assert b"not JSON-RPC" in done.stderr
