"""MCP over Streamable HTTP in front of the bus: each ``tools/call`` becomes one NATS request."""
