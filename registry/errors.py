"""Exceptions of the registry package."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of the exceptions raised by the registry package."""


class ReleaseError(RegistryError):
    """Raised when a publish, rollback, retire or deprecate request cannot be done (the message says why)."""
