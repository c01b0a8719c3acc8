"""The sandbox: running untrusted Wasm guests as tools, within their limits and grants.

One wasmtime Engine per process (``engine``), a Store factory that every call goes through
(``limits``), guests stopped by epoch or cancellation (``interrupts``), deny-by-default grants
(``capabilities``, ``http_host``, ``mcp_host``), and the two tool kinds: Wasm components
(``component``) and WASI command modules (``wasi_command``). Nothing here knows about NATS: the
bus side of the worker hands a call in and gets a ``CallToolResult`` back.
"""

from workers.sandbox.call_context import CallContext
from workers.sandbox.capabilities import Grants
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError, UnknownTool
from workers.sandbox.wasi_command import LoadedCommand

__all__ = [
    "CallContext",
    "ComponentLoadError",
    "EngineHost",
    "Grants",
    "LoadedCommand",
    "LoadedComponent",
    "UnknownTool",
]
