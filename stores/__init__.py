"""The JetStream stores that several roles share: durable tasks, published packages and views.

A store belongs to no role: gateways, workers, the registry and the CLI all read and write
through it, so a role imports ``stores`` and never another role's package.
"""

from stores.errors import (
    ArgumentsTooLarge,
    ArtifactError,
    ChangeConflict,
    InvalidName,
    StoreError,
    TaskFinished,
    TaskNotFound,
    UnknownCursor,
    VersionExists,
)
from stores.package_store import (
    LATEST,
    KeyParts,
    PackageStore,
    artifact_digest,
    check_alias,
    check_name,
    check_version,
    parse_key,
    version_order,
)
from stores.task_store import TaskStore, ensure_tasks_stream, task_consumer_config
from stores.view_store import ViewStore, check_view

__all__ = [
    "LATEST",
    "ArgumentsTooLarge",
    "ArtifactError",
    "ChangeConflict",
    "InvalidName",
    "KeyParts",
    "PackageStore",
    "StoreError",
    "TaskFinished",
    "TaskNotFound",
    "TaskStore",
    "UnknownCursor",
    "VersionExists",
    "ViewStore",
    "artifact_digest",
    "check_alias",
    "check_name",
    "check_version",
    "check_view",
    "ensure_tasks_stream",
    "parse_key",
    "task_consumer_config",
    "version_order",
]
