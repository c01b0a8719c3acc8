"""Exceptions of the bus package; nats-py errors are translated here, at one boundary."""

from __future__ import annotations


class BusError(Exception):
    """Base of the exceptions raised by the bus package."""


class BusUnavailable(BusError):
    """Raised when no NATS server can be reached within the connect timeout."""


class EmbeddedServerError(BusError):
    """Raised when the embedded nats-server cannot be found, started, or does not become ready."""
