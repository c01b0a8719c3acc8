"""NATS security: one user per role, each allowed only the subjects its role uses.

``server_config`` renders a nats-server configuration for a deployment's prefix: JetStream on,
and users ``registry``, ``worker`` and ``gateway`` (plus ``operator`` for the CLI verbs) with the
permissions below. Nobody else may connect: an anonymous client is refused at connect, so it
can call no tool. ``toolbus nats-config`` prints it with fresh passwords, or (for a config that
is committed or shared by the nodes of a cluster) with ``$ROLE_NATS_PASSWORD`` references that
nats-server fills in from its environment.

The permissions follow the bus contract (docs/bus-protocol.md):

- a **worker** takes calls and tasks, answers pings, announces itself, and writes task records
  and results; it cannot publish registry events, answer release requests, or listen to them;
- a **gateway** sends calls, cancels and tasks, reads the catalogue, publishes audit events and
  keeps the rate-limit counters; it cannot take calls;
- the **registry** keeps the catalogue and the tasks and provisions JetStream;
- the **operator** role is for people: release verbs, tasks, calls.

JetStream's API is per stream: each role may use the API of the streams behind its buckets
(info, consumers, reads, create-if-missing), and only the registry may delete, purge or update a
stream. Replies to requests a role received are allowed by ``allow_responses``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bus.connection import inbox_prefix
from bus.subjects import Subjects

ROLES = ("registry", "worker", "gateway", "operator")


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def as_config(self) -> dict[str, object]:
        return {
            "publish": {"allow": list(self.publish)},
            "subscribe": {"allow": list(self.subscribe)},
            "allow_responses": True,
        }


def _kv(bucket: str) -> str:
    return f"KV_{bucket}"


def _obj(bucket: str) -> str:
    return f"OBJ_{bucket}"


def _stream_api(streams: Iterable[str], *, admin: bool = False) -> list[str]:
    """JetStream API subjects for ``streams``: everything but delete/purge/update unless ``admin``."""
    verbs = (
        ["$JS.API.STREAM.INFO.{s}", "$JS.API.STREAM.CREATE.{s}", "$JS.API.STREAM.MSG.GET.{s}"]
        + ["$JS.API.DIRECT.GET.{s}", "$JS.API.DIRECT.GET.{s}.>", "$JS.API.CONSUMER.>"]
        + (["$JS.API.STREAM.>"] if admin else [])
    )
    return sorted({verb.format(s=stream) for stream in streams for verb in verbs})


def role_permissions(subjects: Subjects, role: str) -> Permissions:
    """What ``role`` may publish and subscribe to in the deployment of ``subjects``."""
    p = subjects.prefix
    tools, packages = subjects.tools_bucket, subjects.packages_bucket
    tasks_kv, results, artifacts = subjects.tasks_bucket, subjects.task_results_store, subjects.artifacts_store
    inbox = f"{inbox_prefix(role)}.>"  # a role's connections publish to their own inboxes (bus.connection.caught_up)
    common_sub = [inbox]
    common_pub = [inbox, "$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.FC.>"]
    if role == "registry":
        streams = [_kv(tools), _kv(packages), _kv(tasks_kv), _obj(results), _obj(artifacts)]
        return Permissions(
            publish=(
                *common_pub,
                *_stream_api([*streams, subjects.tasks_stream, subjects.audit_stream], admin=True),
                f"{p}.registry.>",
                subjects.events_any,
                subjects.worker_ping_any,
                subjects.worker_introspect,
                subjects.cancel_any,
                subjects.task_status_any,
                subjects.task_work_any,
                f"$KV.{tools}.>",
                f"$KV.{packages}.>",
                f"$KV.{tasks_kv}.>",
                f"$O.{results}.>",
                f"$O.{artifacts}.>",
            ),
            subscribe=(
                *common_sub,
                f"{p}.registry.>",
                subjects.call_any,
                f"{p}.tasks.*",
                subjects.tasks_max_deliveries_advisory,
            ),
        )
    if role == "worker":
        streams = [_kv(packages), _kv(tasks_kv), _obj(results), _obj(artifacts), subjects.tasks_stream]
        return Permissions(
            publish=(
                *common_pub,
                *_stream_api(streams),
                f"$JS.ACK.{subjects.tasks_stream}.>",
                subjects.announce,
                subjects.task_status_any,
                f"$KV.{tasks_kv}.>",
                f"$O.{results}.>",
            ),
            subscribe=(
                *common_sub,
                subjects.call_any,
                subjects.cancel_any,
                subjects.worker_ping_any,
                subjects.registry_hello,
                subjects.worker_introspect,
                "$SRV.>",
            ),
        )
    if role == "gateway":
        limits = subjects.rate_limits_bucket  # shared by the replicas (gateway.ratelimit)
        streams = [_kv(tools), _kv(tasks_kv), _obj(results), subjects.tasks_stream, _kv(limits)]
        return Permissions(
            publish=(
                *common_pub,
                *_stream_api(streams),
                subjects.call_any,
                subjects.cancel_any,
                f"{p}.registry.tools.*",
                subjects.task_work_any,
                subjects.task_status_any,
                f"$KV.{tasks_kv}.>",
                f"$KV.{limits}.>",
                subjects.audit_any,
            ),
            subscribe=(*common_sub, subjects.task_status_any),
        )
    if role == "operator":
        streams = [
            *(_kv(b) for b in (tools, packages, tasks_kv)),
            *(_obj(b) for b in (results, artifacts)),
            subjects.tasks_stream,
            subjects.audit_stream,  # `toolbus audit` reads it
        ]
        return Permissions(
            publish=(
                *common_pub,
                *_stream_api(streams),
                subjects.call_any,
                f"{p}.registry.>",
                f"{p}.tasks.*",
                f"$O.{artifacts}.>",
            ),
            subscribe=(*common_sub, subjects.events_any),
        )
    raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


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
    users = [
        {"user": role, "password": passwords[role], "permissions": role_permissions(subjects, role).as_config()}
        for role in ROLES
    ]
    lines = [f"host: {_render(host)}", f"port: {port}"]
    if http_port is not None:
        lines.append(f"http_port: {http_port}")
    if cluster is not None:
        block = {"name": cluster.name, "host": host, "port": cluster.port, "routes": list(cluster.routes)}
        lines.append(f"cluster {_render(block)}")
    lines += [
        f"jetstream {{ store_dir: {_render(str(store_dir))} }}",
        f"authorization {{ users: {_render(users)} }}",
        "",
    ]
    return "\n".join(lines)


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
