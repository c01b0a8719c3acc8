"""MCP over Streamable HTTP in front of the bus: each ``tools/call`` becomes one NATS request.

The public names load on first use (PEP 562), so ``toolbus worker`` — which imports this
package only to register the ``gateway`` verb — never pays for the mcp SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "gateway.app": ["HttpServer", "build_app", "gateway_state", "serve"],
    "gateway.calls": ["ToolCaller", "error_from_reply", "result_from_reply"],
    "gateway.catalogue": [
        "Catalogue",
        "CatalogueChange",
        "CatalogueEntry",
        "CataloguePage",
        "CatalogueWatcher",
        "decode_cursor",
        "encode_cursor",
    ],
    "gateway.changes": ["ListChanges"],
    "gateway.errors": [
        "JSONRPC_ERRORS",
        "BadRequest",
        "BusDisconnected",
        "CallFailed",
        "Cancelled",
        "DeadlineExceeded",
        "GatewayError",
        "InvalidCursor",
        "JsonRpcError",
        "NoWorker",
        "Overloaded",
        "PayloadTooLarge",
        "UnknownTool",
        "WorkerFailed",
        "to_jsonrpc",
    ],
    "gateway.events": ["EventRelay"],
    "gateway.hotpath": ["HotPath"],
    "gateway.server": ["GatewayServer", "ToolFrontend", "build_server", "build_session_manager", "transport_security"],
    "gateway.tasks": ["TaskFrontend"],
    "gateway.inbound": ["Inbound", "ParseRejected", "creates_task", "declares_tasks", "parse"],
    "gateway.sessions": ["SessionOwners"],
    "gateway.boundary": ["ErrorBoundary"],
    "gateway.principals": [
        "ANONYMOUS",
        "Principal",
        "api_key_principal",
        "principal_in",
        "principal_of",
        "token_principal",
    ],
    "gateway.auth": ["AuthFailure", "Authenticator"],
    "gateway.policy": ["Policy"],
    "gateway.front_door": ["FrontDoor", "Refusal"],
    "gateway.tools": ["ToolService"],
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    return getattr(import_module(module), name)
