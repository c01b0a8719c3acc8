"""The mcp SDK's private names the gateway uses (all in ``gateway.sdk_adapter``) still exist.

An SDK upgrade that renames one fails here, by name, instead of somewhere behind a request.
"""

from __future__ import annotations

import ast
from importlib.metadata import version
from pathlib import Path

from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from gateway.sdk_adapter import PRIVATE_NAMES
from gateway.server import GatewayServer, build_session_manager, transport_security
from schemas.config import GatewaySettings

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
PINNED_SDK = "2.3.0"
"""The SDK these private names were checked against; a new version must be checked again (here)."""


def test_the_pinned_sdk_is_installed() -> None:
    assert version("mcp") == PINNED_SDK, "the mcp SDK changed: re-check gateway/sdk_adapter.py, then update"


def test_every_private_name_exists_on_the_installed_sdk() -> None:
    manager = build_session_manager(GatewayServer("t"), transport_security(GatewaySettings()))
    transport = StreamableHTTPServerTransport(mcp_session_id="s", idle_timeout=60)
    live = {StreamableHTTPSessionManager: manager, StreamableHTTPServerTransport: transport}
    for kind, names in PRIVATE_NAMES.items():
        for name in names:
            assert hasattr(live[kind], name), f"{kind.__name__}.{name} is gone from mcp {version('mcp')}"
    assert callable(manager._handle_request)
    assert isinstance(manager._server_instances, dict)
    assert isinstance(transport._requests_in_flight, int)


def test_no_other_gateway_module_reaches_into_the_sdk() -> None:
    """Only the adapter touches an underscore attribute of an object that is not our own."""
    ours = {"self", "cls", "argparse"}  # argparse._SubParsersAction: the stdlib's documented type for subparsers
    for path in sorted(GATEWAY.glob("*.py")):
        if path.name == "sdk_adapter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id in ours, (
                    f"{path.name}:{node.lineno}: .{node.attr} — private reaches belong in gateway/sdk_adapter.py"
                )
