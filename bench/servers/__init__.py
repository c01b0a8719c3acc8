"""The comparison servers of the bench, each run as its own process (``python -m bench.servers.X``).

- ``sdk``: the baseline, the mcp SDK's ``MCPServer`` answering ``kit_add`` in Python.
- ``limit``: the ceiling, a bare Starlette + msgspec endpoint doing one NATS request per call.
- ``echo``: a raw nats-py responder, the far end of ``limit`` and the yardstick of the bus path.

Each runs until SIGTERM. The HTTP servers are ready when a probe request succeeds; the echo
responder prints ``READY`` once it is subscribed.
"""

READY = "READY"
