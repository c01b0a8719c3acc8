"""Capability grants: what a component may reach beyond clocks, random and its own stdio.

Deny by default: a component gets only the ``[capabilities.NAME]`` entries it lists, each one a
host directory (``dir``), named environment variables (``env``) or outbound HTTP to an allowlist
(``http``). These are the models of the config file; ``workers.sandbox.capabilities`` turns them
into what wasmtime links.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from schemas.environment import host_variable
from schemas.errors import ConfigError
from schemas.settings_model import SettingsModel

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HTTP_ALLOW = re.compile(r"^(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def _matching(pattern: re.Pattern[str], what: str) -> Any:
    """A validator that refuses strings not matching ``pattern``, saying what was expected."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


_EnvName = Annotated[str, _matching(_ENV_NAME, "an environment variable name (letters, digits, _)")]
_AllowEntry = Annotated[str, _matching(_HTTP_ALLOW, "a host, host:port, [v6]:port or *.domain (no scheme or path)")]
_GuestPath = Annotated[str, _matching(re.compile(r"^/"), "an absolute guest path such as /data")]


class DirCapability(SettingsModel):
    """A host directory the guest sees at ``guest`` (WASI preopen); read-only unless ``writable``."""

    kind: Literal["dir"]
    host: Path
    """The directory on the worker's host (relative paths: to the config file)."""
    guest: _GuestPath
    """Where the guest sees it: an absolute guest path such as ``/data``."""
    writable: bool = False
    """Off: the guest may list and read, and every create, write, rename or delete fails."""


class EnvCapability(SettingsModel):
    """Environment variables the guest sees; nothing is ever inherited from the worker's own."""

    kind: Literal["env"]
    vars: dict[_EnvName, str] = Field(default_factory=dict)
    """Variables with the value written here."""
    from_host: list[_EnvName] = Field(default_factory=list)
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


class HttpCapability(SettingsModel):
    """Outbound HTTP(S) through toolbus's policed host interface, to the listed hosts only."""

    kind: Literal["http"]
    allow: Annotated[list[_AllowEntry], Field(min_length=1)]
    """``host`` (on the scheme's default port), ``host:port``, ``[v6 address]:port``, or ``*.domain``
    (any subdomain, default port). Matched against the URL's host name; IP addresses only match
    entries that spell them."""
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """Per request, and never past the call's own deadline."""
    max_response_bytes: Annotated[int, Field(ge=0)] = 4 * 1024 * 1024
    """A larger response body is refused (the guest gets an error), not truncated."""


Capability = Annotated[DirCapability | EnvCapability | HttpCapability, Field(discriminator="kind")]
"""A named grant in ``[capabilities.NAME]`` that components list in their ``capabilities``."""
