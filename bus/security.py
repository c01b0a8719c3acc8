"""NATS security: one user per role, each allowed only what ``bus.permissions`` grants it.

``server_config`` renders a nats-server configuration for a deployment's prefix: JetStream on,
and users ``registry``, ``worker`` and ``gateway`` (plus ``operator`` for the CLI verbs) with
their permissions. Nobody else may connect: an anonymous client is refused at connect, so it
can call no tool. ``toolbus nats-config`` prints it with fresh passwords, or (for a config that
is committed or shared by the nodes of a cluster) with ``$ROLE_NATS_PASSWORD`` references that
nats-server fills in from its environment; ``toolbus up`` writes one with the passwords of
``bus.credentials``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bus.permissions import ROLES, role_permissions
from bus.subjects import Subjects

__all__ = [
    "ROLES",
    "Cluster",
    "EnvReference",
    "authorization",
    "env_passwords",
    "new_passwords",
    "password_variable",
    "server_config",
]


def new_passwords() -> dict[str, str]:
    return {role: secrets.token_urlsafe(24) for role in ROLES}


@dataclass(frozen=True)
class EnvReference:
    """A value nats-server reads from its environment when it loads the config (``$NAME``)."""

    name: str


def password_variable(role: str) -> str:
    """The environment variable a config made with ``env_passwords`` reads ``role``'s password from."""
    return f"{role.upper()}_NATS_PASSWORD"


def env_passwords() -> dict[str, EnvReference]:
    """Passwords as ``$REGISTRY_NATS_PASSWORD``-style references: the config holds no secret, so
    it can be committed and shared by every node of a cluster."""
    return {role: EnvReference(password_variable(role)) for role in ROLES}


@dataclass(frozen=True)
class Cluster:
    """The ``cluster`` block of one node: the cluster's name, where it listens for routes, its peers."""

    name: str
    routes: tuple[str, ...]
    """``nats://host:port`` of the peers; one config fits every node, since a server ignores its own."""
    port: int = 6222


def server_config(
    subjects: Subjects,
    passwords: Mapping[str, str | EnvReference],
    *,
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = 4222,
    http_port: int | None = None,
    cluster: Cluster | None = None,
) -> str:
    """A nats-server configuration: JetStream, and one user per role with its permissions.

    ``http_port`` turns on the monitoring endpoint (``/healthz``); ``cluster`` makes the server
    one node of a cluster (its name, ``server_name``, comes from the command line).
    """
    lines = [f"host: {_render(host)}", f"port: {port}"]
    if http_port is not None:
        lines.append(f"http_port: {http_port}")
    if cluster is not None:
        block = {"name": cluster.name, "host": host, "port": cluster.port, "routes": list(cluster.routes)}
        lines.append(f"cluster {_render(block)}")
    lines += [
        f"jetstream {{ store_dir: {_render(str(store_dir))} }}",
        authorization(subjects, passwords),
        "",
    ]
    return "\n".join(lines)


def authorization(subjects: Subjects, passwords: Mapping[str, str | EnvReference]) -> str:
    """The ``authorization`` block alone: one user per role with its permissions, nobody else
    (what ``toolbus up`` gives its embedded server; ports and store come from its command line)."""
    users = [
        {"user": role, "password": passwords[role], "permissions": role_permissions(subjects, role).as_config()}
        for role in ROLES
    ]
    return f"authorization {{ users: {_render(users)} }}"


def _render(value: object, indent: str = "") -> str:
    """``value`` in nats-server's config syntax: JSON, except an ``EnvReference`` is a bare ``$NAME``."""
    if isinstance(value, EnvReference):
        return f"${value.name}"
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = ",\n".join(f"{inner}{json.dumps(key)}: {_render(item, inner)}" for key, item in value.items())
        return f"{{\n{items}\n{indent}}}"
    if isinstance(value, list) and value:
        items = ",\n".join(f"{inner}{_render(item, inner)}" for item in value)
        return f"[\n{items}\n{indent}]"
    return json.dumps(value)
