"""Exceptions of the stores package: what a JetStream store refuses, or cannot find."""

from __future__ import annotations

from schemas.wire import TaskRecord


class StoreError(Exception):
    """Base of the exceptions raised by the stores package."""


class InvalidName(StoreError):
    """Raised when a package name, version or alias has a form the packages bucket cannot hold as a key."""


class VersionExists(StoreError):
    """Raised when a version is written that is already published: versions are immutable."""


class ArtifactError(StoreError):
    """Raised when an artifact is missing from the artifact store, or its bytes do not match its digest."""


class TaskNotFound(StoreError):
    """Raised when no task with that id is visible to that principal."""


class ArgumentsTooLarge(StoreError):
    """Raised when a task's arguments are larger than ``[nats] max_payload_bytes``."""


class UnknownCursor(StoreError, ValueError):
    """Raised when a ``list`` cursor is not one of the principal's tasks (not one the store issued)."""


class TaskFinished(StoreError):
    """Raised when a task to change had already ended; ``record`` says how."""

    def __init__(self, record: TaskRecord) -> None:
        super().__init__(f"task {record.task_id} has already ended: {record.status}")
        self.record = record


class ChangeConflict(StoreError):
    """Raised when a task record keeps changing under a compare-and-set, attempt after attempt."""
