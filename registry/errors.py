"""Exceptions of the registry package."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of the exceptions raised by the registry package."""
