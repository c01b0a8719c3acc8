"""Exceptions of the bus package; nats-py errors are translated here, at one boundary."""

from __future__ import annotations


class BusError(Exception):
    """Base of the exceptions raised by the bus package."""


class BusUnavailable(BusError):
    """Raised when no NATS server can be reached within the connect timeout."""


class EmbeddedServerError(BusError):
    """Raised when the embedded nats-server cannot be found, started, or does not become ready."""


class CredentialsError(BusError):
    """Raised when the credentials directory or a file in it could be someone else's: a symlink,
    owned by another user, or readable or writable by others."""


class GiveUp(BusError):
    """Raised inside an acknowledgement scope (``bus.acks``) when its message can never be handled,
    such as one that cannot be decoded: the scope terminates it instead of having it delivered again."""
