"""The process environment: every variable toolbus reads, in one place.

Settings take their defaults from here (``schemas.config``) and capability grants copy named
variables through here (``schemas.capabilities``): no other module reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path

from schemas.errors import ConfigError

MAX_NATS_REPLICAS = 5
"""JetStream's own ceiling on a stream's replicas."""


def default_state_dir() -> Path:
    """Where embedded NATS data and caches live unless config says otherwise."""
    override = os.environ.get("TOOLBUS_STATE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "toolbus"


def default_cache_dir() -> Path:
    """Where built and compiled components are cached (content-addressed, safe to share)."""
    override = os.environ.get("TOOLBUS_CACHE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "toolbus"


DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def nats_url_from_env() -> str:
    """``$TOOLBUS_NATS_URL``, else the local default: where every verb finds NATS unless the config
    file or ``--nats`` says otherwise."""
    return os.environ.get("TOOLBUS_NATS_URL") or DEFAULT_NATS_URL


def mcp_url_from_env() -> str | None:
    """``$TOOLBUS_MCP_URL``: the gateway endpoint ``toolbus stdio`` relays to."""
    return os.environ.get("TOOLBUS_MCP_URL") or None


def mcp_token_from_env() -> str | None:
    """``$TOOLBUS_TOKEN``: the API key or JWT ``toolbus stdio`` presents to the gateway (kept out of
    the argv a desktop client's config would otherwise show)."""
    return os.environ.get("TOOLBUS_TOKEN") or None


def nats_password_from_env() -> str | None:
    """``TOOLBUS_NATS_PASSWORD``: keeps the role's secret out of the config file."""
    return os.environ.get("TOOLBUS_NATS_PASSWORD") or None


PRINCIPAL_KEY_VARIABLE = "TOOLBUS_PRINCIPAL_KEY"


def principal_key_from_env() -> str | None:
    """``$TOOLBUS_PRINCIPAL_KEY``: the key gateways sign principals with (see bus/principal.py)."""
    return os.environ.get(PRINCIPAL_KEY_VARIABLE) or None


SUPERVISOR_PID_VARIABLE = "TOOLBUS_SUPERVISOR_PID"


def supervisor_pid_from_env() -> int | None:
    """``$TOOLBUS_SUPERVISOR_PID``: set by ``toolbus up`` for its children (``cli.lifecycle``);
    taken out of the environment, so a process the child starts does not take it for its own."""
    value = os.environ.pop(SUPERVISOR_PID_VARIABLE, "")
    return int(value) if value.isascii() and value.isdigit() else None  # isdigit alone passes '²'; int() refuses it


NATS_REPLICAS_VARIABLE = "TOOLBUS_NATS_REPLICAS"


def nats_replicas_from_env() -> int:
    """``TOOLBUS_NATS_REPLICAS``: how ``toolbus up --cluster`` tells its children the replica count.

    Raises:
        ConfigError: the variable is set but is not a whole number from 1 to 5.
    """
    value = os.environ.get(NATS_REPLICAS_VARIABLE) or "1"
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_NATS_REPLICAS:  # '²' isdigit
        raise ConfigError(f"{NATS_REPLICAS_VARIABLE}: {value!r} is not a whole number from 1 to {MAX_NATS_REPLICAS}")
    return int(value)


def otlp_endpoint_from_env() -> str | None:
    """The standard OpenTelemetry variables, when set: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (a
    full traces URL), else ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL); ``OTEL_SDK_DISABLED=true``
    turns export off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def otel_service_name_from_env() -> str | None:
    """``$OTEL_SERVICE_NAME``, when set."""
    return os.environ.get("OTEL_SERVICE_NAME") or None


def host_variable(name: str) -> str | None:
    """The worker's own environment variable ``name`` (an ``env`` grant's ``from_host``), or None."""
    return os.environ.get(name)
