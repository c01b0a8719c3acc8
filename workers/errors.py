"""Exceptions of the workers package."""

from __future__ import annotations


class WorkersError(Exception):
    """Base of the exceptions raised by the workers package."""


class UnknownTool(WorkersError, KeyError):
    """Raised when a call names a tool that the loaded component does not export."""

    def __str__(self) -> str:
        # KeyError would print the repr of its argument; keep the message readable.
        return str(self.args[0]) if self.args else "unknown tool"


class ComponentLoadError(WorkersError):
    """Raised when a component cannot be read, compiled, or needs an import the sandbox does not grant."""


class BuildError(WorkersError):
    """Raised when componentize-py cannot build a component from a ``source`` project."""
