"""Exceptions of the sandbox: a guest that cannot be loaded, a tool it does not have."""

from __future__ import annotations

from workers.errors import WorkersError


class UnknownTool(WorkersError, KeyError):
    """Raised when a call names a tool that the loaded component does not export."""

    def __str__(self) -> str:
        # KeyError would print the repr of its argument; keep the message readable.
        return str(self.args[0]) if self.args else "unknown tool"


class ComponentLoadError(WorkersError):
    """Raised when a component cannot be read, compiled, or needs an import the sandbox does not grant."""
