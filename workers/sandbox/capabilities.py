"""What one component is granted: the named capabilities in its config, resolved for wasmtime.

Deny by default. A guest always has WASI clocks and random numbers, and stdout/stderr that go
into its call's bounded log. Everything else comes from ``[capabilities.NAME]`` entries the
component lists: preopened directories (read-only unless ``writable``), environment variables
(named; never inherited), outbound HTTP through ``toolbus:http/client`` to an allowlist. Sockets
are linked with WASI 0.2, and wasmtime's default socket policy refuses every address.

Imports are checked when the component loads: a component that imports an interface it was not
granted fails then, with a message naming the import, rather than at its first call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from schemas.capabilities import Capability, DirCapability, EnvCapability, HttpCapability
from schemas.config import ComponentSettings
from schemas.errors import ConfigError
from workers.sandbox.errors import ComponentLoadError
from workers.sandbox.http_host import HTTP_INTERFACE, HTTP_INTERFACE_UNVERSIONED, HttpPolicy, link_http

WASI_HTTP_PREFIX = "wasi:http/"


@dataclass(frozen=True)
class Preopen:
    host: Path
    guest: str
    writable: bool


@dataclass(frozen=True)
class Grants:
    """The resolved grants of one component; the default grants nothing."""

    env: tuple[tuple[str, str], ...] = ()
    preopens: tuple[Preopen, ...] = ()
    http: HttpPolicy | None = None

    @classmethod
    def resolve(cls, component: ComponentSettings, capabilities: Mapping[str, Capability]) -> Grants:
        """The grants of ``component``'s ``capabilities`` list, checked against this worker's.

        The one place that checks them for every source: a worker's own config is also checked
        when it loads, but a published package names capabilities that only the worker running
        it can resolve.

        Raises:
            ComponentLoadError: a name is not defined under this worker's ``[capabilities]``, a
                command module is granted outbound HTTP, a granted directory does not exist, or a
                ``from_host`` variable is not set; the message names the component and the capability.
        """
        env: dict[str, str] = {}
        preopens: list[Preopen] = []
        http: list[tuple[str, list[str], float, int]] = []
        for name in component.capabilities:
            where = f"component {component.name!r}, capability {name!r}"
            capability = capabilities.get(name)
            if capability is None:
                raise ComponentLoadError(f"{where}: not defined under [capabilities] on this worker")
            if isinstance(capability, HttpCapability) and component.kind == "command":
                raise ComponentLoadError(f"{where}: a command module cannot be granted outbound HTTP")
            if isinstance(capability, DirCapability):
                if not capability.host.is_dir():
                    raise ComponentLoadError(f"{where}: directory {capability.host} does not exist")
                preopens.append(Preopen(capability.host, capability.guest, capability.writable))
            elif isinstance(capability, EnvCapability):
                try:
                    env.update(capability.values())
                except ConfigError as exc:
                    raise ComponentLoadError(f"{where}: {exc}") from exc
            elif isinstance(capability, HttpCapability):
                http.append((name, capability.allow, capability.timeout_s, capability.max_response_bytes))
        return cls(
            env=tuple(sorted(env.items())),
            preopens=tuple(preopens),
            http=HttpPolicy.merge(http) if http else None,
        )

    def wasi(self) -> wasmtime.WasiConfig:
        """A WASI context with exactly these grants (stdio is the caller's to set)."""
        wasi = wasmtime.WasiConfig()
        if self.env:
            wasi.env = list(self.env)
        for preopen in self.preopens:
            # fs_mutable defaults to True in wasmtime-py: always pass it.
            wasi.preopen_dir(str(preopen.host), preopen.guest, fs_mutable=preopen.writable)
        return wasi

    def check_imports(self, imports: list[str], label: str) -> None:
        """Refuse a component importing a capability it was not granted, naming the import.

        Raises:
            ComponentLoadError: it imports ``wasi:http`` (never linked: it cannot be policed), or
                ``toolbus:http/client`` without an ``http`` capability.
        """
        for name in imports:
            if name.startswith(WASI_HTTP_PREFIX):
                raise ComponentLoadError(
                    f"{label} imports `{name}`: toolbus does not link wasi:http, which cannot be limited to "
                    f"an allowlist; outbound HTTP goes through `{HTTP_INTERFACE}`, granted by an `http` "
                    "capability (docs/sandbox.md)"
                )
            if name.split("@", 1)[0] == HTTP_INTERFACE_UNVERSIONED and self.http is None:
                raise ComponentLoadError(
                    f"{label} imports `{name}` (outbound HTTP) but is granted no `http` capability; "
                    "list one in its `capabilities` (docs/sandbox.md)"
                )

    def link(self, linker: Any) -> None:
        """Define the host interfaces these grants provide beyond WASI (``toolbus:http/client``)."""
        if self.http is not None:
            link_http(linker, self.http)
