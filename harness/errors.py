"""Exceptions of the harness package."""

from __future__ import annotations


class HarnessError(RuntimeError):
    """Base of the exceptions raised by the harness package."""


class AptError(HarnessError):
    """Raised when a program is missing and apt-get could not install the packages that bring it."""


class ChildFailed(HarnessError):
    """Raised when a child exits or does not become ready; the message ends with its log tail."""


class DockerUnavailable(HarnessError):
    """Raised when Docker's programs cannot be installed or dockerd does not start."""
