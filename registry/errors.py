"""Exceptions of the registry package."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of the exceptions raised by the registry package."""


class ReleaseError(RegistryError):
    """Raised when a publish, rollback, retire or deprecate request cannot be done (the message says why)."""


class UnknownTool(RegistryError):
    """Raised when a task is submitted for a tool the catalogue has never heard of (no worker
    has offered it since the registry started, and the tools bucket does not list it)."""


class SignatureError(RegistryError):
    """Raised when an artifact's signature is missing, not by a trusted key, or does not cover it,
    or when a key cannot be read or a signature cannot be pushed (the message says which)."""
