"""Capability grants: what a component may reach beyond clocks, random and its own stdio.

Deny by default: a component gets only the ``[capabilities.NAME]`` entries it lists, each one a
host directory (``dir``), named environment variables (``env``) or outbound HTTP to an allowlist
(``http``). These are the models of the config file; ``workers.sandbox.capabilities`` turns them
into what wasmtime links.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from schemas.environment import host_variable
from schemas.errors import ConfigError
from schemas.settings_model import NOT_A, SettingsModel

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: $ would let a final newline pass
_HTTP_ALLOW = re.compile(r"^(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?\Z")


def _matching(pattern: re.Pattern[str], what: str) -> Meta:
    """A constraint refusing strings not matching ``pattern``; a refusal says ``'x' is not <what>``."""
    return Meta(pattern=pattern.pattern, extra={NOT_A: what})


_EnvName = Annotated[str, _matching(_ENV_NAME, "an environment variable name (letters, digits, _)")]
_AllowEntry = Annotated[str, _matching(_HTTP_ALLOW, "a host, host:port, [v6]:port or *.domain (no scheme or path)")]
_GuestPath = Annotated[str, _matching(re.compile(r"^/"), "an absolute guest path such as /data")]


class DirCapability(SettingsModel, frozen=True, tag="dir", tag_field="kind"):
    """A host directory the guest sees at ``guest`` (WASI preopen); read-only unless ``writable``."""

    host: Path
    """The directory on the worker's host (relative paths: to the config file)."""
    guest: _GuestPath
    """Where the guest sees it: an absolute guest path such as ``/data``."""
    writable: bool = False
    """Off: the guest may list and read, and every create, write, rename or delete fails."""


class EnvCapability(SettingsModel, frozen=True, tag="env", tag_field="kind"):
    """Environment variables the guest sees; nothing is ever inherited from the worker's own."""

    vars: dict[_EnvName, str] = msgspec.field(default_factory=dict)
    """Variables with the value written here."""
    from_host: list[_EnvName] = msgspec.field(default_factory=list)
    """Variables copied, by name, from the worker's environment when the component loads."""

    def values(self) -> dict[str, str]:
        """The variables and their values; ``from_host`` ones are read from this process's env.

        Raises:
            ConfigError: a ``from_host`` variable is not set in this process's environment.
        """
        values = dict(self.vars)
        for name in self.from_host:
            value = host_variable(name)
            if value is None:
                raise ConfigError(f"from_host: {name} is not set in the worker's environment")
            values[name] = value
        return values


class HttpCapability(SettingsModel, frozen=True, tag="http", tag_field="kind"):
    """Outbound HTTP(S) through toolbus's policed host interface, to the listed hosts only."""

    allow: Annotated[list[_AllowEntry], Meta(min_length=1)]
    """``host`` (on the scheme's default port), ``host:port``, ``[v6 address]:port``, or ``*.domain``
    (any subdomain, default port). Matched against the URL's host name; IP addresses only match
    entries that spell them."""
    timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    """Per request, and never past the call's own deadline."""
    max_response_bytes: Annotated[int, Meta(ge=0)] = 4 * 1024 * 1024
    """A larger response body is refused (the guest gets an error), not truncated."""


Capability = DirCapability | EnvCapability | HttpCapability
"""A named grant in ``[capabilities.NAME]`` that components list in their ``capabilities``; its
``kind`` (``dir``, ``env``, ``http``) says which."""
