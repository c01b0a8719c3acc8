"""A JSON Schema 2020-12 input schema reaches clients exactly as configured.

The schema of examples/toolbus.toml's ``json_schema_2020_12_tool`` (the conformance suite's
json-schema-2020-12 scenario: ``$schema``, ``$defs`` with an ``$anchor``, ``$ref``, ``allOf``/``anyOf``,
``if``/``then``/``else``, ``additionalProperties``) goes config → the loaded command's descriptor →
a worker announcement on the wire → the catalogue bucket → ``tools/list`` in both eras, unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nats.js.kv import KeyValue

from schemas.codec import decode, encode
from schemas.config import load_settings
from schemas.wire import WorkerAnnouncement
from tests.gateway.raw_mcp import ERAS, RawMcp
from tests.gateway.responders import RunningGateway, put_tools, ready
from workers.sandbox.engine import EngineHost
from workers.sandbox.wasi_command import LoadedCommand

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOOL = "json_schema_2020_12_tool"


@pytest.mark.parametrize("era", ERAS)
async def test_a_2020_12_schema_reaches_tools_list_unchanged(
    engine_host: EngineHost,
    cache_dir: Path,
    kv: KeyValue,
    start_gateway: Callable[..., Awaitable[RunningGateway]],
    era: str,
) -> None:
    (settings,) = [c for c in load_settings(EXAMPLES / "toolbus.toml").components if c.name == TOOL]
    configured = settings.input_schema
    assert configured is not None
    for keyword in ("$schema", "$defs", "allOf", "if", "then", "else", "additionalProperties"):
        assert keyword in configured, keyword  # the example still shows every feature
    assert configured["$defs"]["address"]["$anchor"] == "addressDef"

    (descriptor,) = LoadedCommand.load(engine_host, settings, EXAMPLES / "wat" / "echo.wat", cache_dir).tools
    announced = decode(encode(WorkerAnnouncement(worker_id="w", tools=[descriptor])), WorkerAnnouncement)
    await put_tools(kv, *announced.tools)
    gateway = await ready(await start_gateway(), TOOL)

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    if era == "2026-07-28":
        params = {
            "_meta": {"io.modelcontextprotocol/protocolVersion": era, "io.modelcontextprotocol/clientCapabilities": {}}
        }
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}).encode()
    response = await RawMcp(gateway.url, era).post(body, method="tools/list")
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    (tool,) = [t for t in json.loads(text)["result"]["tools"] if t["name"] == TOOL]
    assert tool["inputSchema"] == configured
    assert json.dumps(tool["inputSchema"], sort_keys=True) == json.dumps(configured, sort_keys=True)
