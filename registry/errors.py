"""Exceptions of the registry package."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of the exceptions raised by the registry package."""


class ReleaseError(RegistryError):
    """A publish, rollback, retire or deprecate request that cannot be done (the message says why)."""


class ArtifactError(RegistryError):
    """An artifact is missing from the store, or its bytes do not match its digest."""
