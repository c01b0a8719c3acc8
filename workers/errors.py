"""Exceptions of the workers package: the base every worker error derives from.

The sandbox (``workers.sandbox.errors``) and the toolchains (``workers.toolchains.errors``) keep
their own exceptions beside their code; all of them are ``WorkersError``, which is what the
worker process catches to refuse to start with a readable message.
"""

from __future__ import annotations


class WorkersError(Exception):
    """Base of the exceptions raised by the workers package."""


class PublishedSettingsError(WorkersError):
    """Raised when a package's published settings are not valid component settings."""
