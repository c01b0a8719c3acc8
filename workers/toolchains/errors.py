"""Exceptions of the toolchains."""

from __future__ import annotations

from workers.errors import WorkersError


class BuildError(WorkersError):
    """Raised when a toolchain (componentize-py, wasm-tools, clang) cannot build a ``source`` project."""
