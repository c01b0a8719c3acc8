"""Settings of every toolbus process, loaded once from ``toolbus.toml`` and passed down.

The environment is read by ``schemas.environment`` alone (every default that comes from a
variable), the capability grants are modelled in ``schemas.capabilities``. Errors name the file,
the field and the problem, e.g. ``toolbus.toml: components[0].path: file not found``.

One module for the whole file (~540 lines): its sections read top to bottom as ``toolbus.toml``
does, and the file's one reader, ``load_settings``, sits with the models whose field paths its
errors name.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from schemas.capabilities import Capability, DirCapability, HttpCapability
from schemas.environment import (
    MAX_NATS_REPLICAS,
    default_cache_dir,
    default_state_dir,
    nats_password_from_env,
    nats_replicas_from_env,
    nats_url_from_env,
    otel_service_name_from_env,
    otlp_endpoint_from_env,
    principal_key_from_env,
)
from schemas.errors import ConfigError
from schemas.settings_model import SettingsModel
from schemas.wire import ClientCapability, TaskSupport

DEFAULT_MCP_PORT = 3001
DEFAULT_TOOL_TIMEOUT_S = 30.0
"""A tool's own wall-clock limit per call; a call's deadline can only shorten it."""
INLINE_MAX_TIMEOUT_S = 1.0
"""The longest ``timeout_s`` of a tool whose calls run inline: the worker does nothing else meanwhile."""
DEFAULT_CALL_TIMEOUT_S = DEFAULT_TOOL_TIMEOUT_S + 5.0
"""How long the gateway (and ``toolbus call``) waits for a tool call: a tool's default limit plus
room for the worker's answer, so a guest stopped by its limit is an ``isError`` result naming it,
not a deadline error (docs/sandbox.md, "Deadlines")."""
DEFAULT_MAX_CALL_TIMEOUT_S = 300.0
"""Upper bound of a guest's wall time; a runaway guest is interrupted after this."""
DEFAULT_MEMORY_MIB = 64
"""Per linear memory: a componentize-py guest needs ~12.3 MiB just to start, so 64 leaves it room."""
MAX_MEMORY_MIB = 4096
"""A wasm32 linear memory cannot be larger than 4 GiB."""
# Patterns end in \Z, not $: msgspec matches with Python's re, whose $ also matches before a
# final newline ("calc\n" would pass); pydantic's Rust regex, which these rules came from, did not.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Largest arguments or result of one call; larger than a NATS message, they travel through the
Object Store (``bus.payloads``)."""
MIN_MAX_PAYLOAD_BYTES = 1024 * 1024
"""A cap below NATS's own default message size would refuse what travels inline anyway."""
BODY_HEADROOM_BYTES = 1024 * 1024
"""What an HTTP request holds besides the arguments (the JSON-RPC envelope, ``_meta``, escapes the
gateway's encoder writes shorter): the gateway's default body limit is the cap plus this."""
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_BODY_BYTES_DERIVED = 0
"""``[gateway] max_body_bytes`` left unset: ``Settings`` derives it from the payload cap (a value
given must be at least 1024, so 0 is never one)."""


def allowed_cores() -> list[int] | None:
    """The cores this process may run on: its CPU affinity (a container's cpuset, ``taskset``, a
    pinned worker), or None where the system cannot say (nor pin a process: not Linux)."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def usable_cores() -> int:
    """How many cores this process may run on (``allowed_cores``), else the machine's count."""
    cores = allowed_cores()
    return max(1, len(cores) if cores is not None else os.cpu_count() or 1)


MIN_DEFAULT_CONCURRENCY = 2
"""Guest threads a worker runs by default even on one core (``default_concurrency``)."""


def default_concurrency() -> int:
    """One guest per core the process may run on, and at least two."""
    # Guests are CPU-bound and release the GIL, so a thread per core keeps the cores busy; the
    # second slot on a single core (a worker ``toolbus up`` pinned to one) lets a call start while
    # another guest waits for I/O, an HTTP fetch or its client.
    return max(MIN_DEFAULT_CONCURRENCY, usable_cores())


def default_worker_processes() -> int:
    """One worker process per core (issue 17: every core used)."""
    # A worker's Python share of a call (decoding, routing, marshalling, replying) holds its
    # process's GIL, and two guest threads of one process on two cores pay for each other's page
    # faults (every copy-on-write fault of a fresh instance flushes the other core's TLB):
    # a process per core, each pinned to its core by ``toolbus up`` ([worker] pin_to_cores), served
    # the componentize-py example 1.65x the calls of one process with two guest threads on 2 cores
    # (docs/performance-analysis.md, "Session 26").
    return usable_cores()


class NatsSettings(SettingsModel, frozen=True):
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password", "principal_key"})

    url: str = msgspec.field(default_factory=nats_url_from_env)
    """NATS server URL(s), comma-separated; default ``$TOOLBUS_NATS_URL``, else ``nats://127.0.0.1:4222``."""
    prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+\Z")] = "toolbus"
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 5.0
    user: str | None = None
    """This process's NATS user: one per role (gateway, worker, registry), see docs/security.md."""
    password: str | None = msgspec.field(default_factory=nats_password_from_env)
    """The user's password; default ``$TOOLBUS_NATS_PASSWORD``."""
    tls_ca_file: Path | None = None
    """CA bundle to verify the server with; setting it turns TLS on."""
    replicas: Annotated[int, Meta(ge=1, le=MAX_NATS_REPLICAS)] = msgspec.field(default_factory=nats_replicas_from_env)
    """JetStream replicas of every stream, KV bucket and object store toolbus creates: 1 on a
    single server, 3 on a 3-node cluster (survives the loss of a node). Buckets that already
    exist keep theirs. Default ``$TOOLBUS_NATS_REPLICAS``, else 1."""
    max_payload_bytes: Annotated[int, Meta(ge=MIN_MAX_PAYLOAD_BYTES)] = DEFAULT_MAX_PAYLOAD_BYTES
    """Largest arguments or result of one call or task (bytes of JSON). Bodies larger than the NATS
    server's message limit travel through the Object Store (docs/bus-protocol.md, "Payloads of any
    size"); larger than this they are refused with an ``isError`` result naming this setting."""
    principal_key: Annotated[str, Meta(min_length=16)] | None = msgspec.field(default_factory=principal_key_from_env)
    """Shared by gateways, workers and the registry: gateways sign the principal of each request
    with it, and the others honour a principal only with a valid signature. Default
    ``$TOOLBUS_PRINCIPAL_KEY``; unset, principals are not sent (every NATS caller is ``nats``)."""


class GatewaySettings(SettingsModel, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = DEFAULT_MCP_PORT
    path: str = "/mcp"
    call_timeout_s: Annotated[float, Meta(gt=0)] = DEFAULT_CALL_TIMEOUT_S
    page_size: Annotated[int, Meta(ge=1, le=10_000)] = 100
    """Tools per ``tools/list`` page."""
    hot_path: bool = True
    """Serve plain tools/call and tools/list without the MCP SDK's per-request machinery
    (same answers, same checks; see gateway/hotpath.py). Off sends every request through the SDK."""
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    """Extra ``Host`` values accepted besides loopback (DNS-rebinding protection)."""
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    """Extra ``Origin`` values accepted besides loopback."""
    max_body_bytes: Annotated[int, Meta(ge=1024)] = MAX_BODY_BYTES_DERIVED
    """Largest request body accepted; larger ones get 413 before they are parsed. Unset, it is
    ``[nats] max_payload_bytes`` plus 1 MiB (``Settings``), so any arguments the bus carries can
    be sent; set it lower to keep a gateway's memory per request small (each body in flight is
    held whole, up to ``max_connections`` of them)."""
    header_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    """A connection must finish sending a request's headers this soon after it opens (or after its
    previous answer): a client trickling headers, or connecting and saying nothing, is dropped."""
    max_header_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024
    """Largest request head (request line and headers) accepted; larger ones get 431 and the
    connection is closed (uvicorn's httptools parser sets no limit of its own)."""
    body_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    """A request's whole body must arrive this soon after its headers; a body that is late or
    shorter than its ``Content-Length`` gets 400 and the connection is closed."""
    max_connections: Annotated[int, Meta(ge=1)] = 1000
    """Open HTTP connections (or requests in progress) the gateway serves at once; a request beyond
    them gets 503 at once, so idle or slow connections cannot exhaust the process's file descriptors."""
    max_sessions_per_principal: Annotated[int, Meta(ge=1)] = 1000
    """2025-era sessions one principal may hold open at once (the gateway holds at most 10,000 in
    all): one more ``initialize`` gets 429, so a single principal cannot shut the others out."""
    initializes_per_minute: Annotated[int, Meta(ge=1)] = 600
    """``initialize`` requests one principal may send in any minute; more get 429."""
    max_waiting_per_principal: Annotated[int, Meta(ge=1)] = 64
    """Requests one principal may hold open at once that wait rather than compute: GET streams,
    ``subscriptions/listen`` and ``tasks/result``. One more gets 429: connections are shared by
    everyone (``max_connections``), so no principal may park on all of them."""


class OAuthSettings(SettingsModel, frozen=True):
    """OAuth 2.1 resource server: JWT bearer tokens from one authorization server."""

    issuer: str
    """The authorization server's issuer identifier; tokens' ``iss`` must equal it."""
    jwks_url: str | None = None
    """Where the issuer publishes its signing keys (fetched, cached, refetched for unknown key ids)."""
    jwks_file: Path | None = None
    """A local JWKS file instead (re-read when it changes)."""
    audiences: list[str] = msgspec.field(default_factory=list)
    """Accepted ``aud`` values; default: ``[auth] resource`` (RFC 8707)."""
    required_scopes: list[str] = msgspec.field(default_factory=list)
    """Scopes every token needs for the MCP endpoint at all; missing ones get 403 ``insufficient_scope``."""
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"])
    """Signature algorithms accepted (never ``none``, never HMAC: the gateway holds no shared secret)."""
    leeway_s: Annotated[float, Meta(ge=0)] = 30.0
    """Clock skew tolerated on ``exp``/``nbf``/``iat``."""
    jwks_cache_s: Annotated[float, Meta(gt=0)] = 300.0
    """How long fetched keys are trusted before being fetched again."""

    def __post_init__(self) -> None:
        self._one_key_source()

    def _one_key_source(self) -> None:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of 'jwks_url' or 'jwks_file'")
        if any(a == "none" or a.startswith("HS") for a in self.algorithms):
            raise ValueError("algorithms: 'none' and HMAC (HS*) algorithms are not accepted")


class ApiKeySettings(SettingsModel, frozen=True):
    """A static API key, stored as its SHA-256 (the key itself never sits in config)."""

    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
    """Hex SHA-256 of the key: ``printf %s "$KEY" | sha256sum``."""
    scopes: list[str] = msgspec.field(default_factory=list)


class PolicyRule(SettingsModel, frozen=True):
    """One authorization rule: principals it matches may call ``tools`` (globs) and use tasks.

    A rule matches a principal holding every scope in ``scopes``, every claim in ``claims``
    (equal, or contained in a list claim) and, when ``subjects`` is given, a subject matching
    one of its globs. A principal may use the union of the tools of every rule it matches.
    """

    scopes: list[str] = msgspec.field(default_factory=list)
    claims: dict[str, str] = msgspec.field(default_factory=dict)
    subjects: list[str] = msgspec.field(default_factory=list)
    tools: list[str] = msgspec.field(default_factory=list)
    tasks: bool = True
    """May create tasks (task-augmented ``tools/call``) and read, list and cancel its own."""


class AuthSettings(SettingsModel, frozen=True):
    """Authentication and authorization of MCP clients; absent = off (loopback development)."""

    resource: str
    """The canonical URI of this MCP endpoint (``https://host/mcp``): the token audience and the
    RFC 9728 ``resource``; its metadata URL is derived from it."""
    oauth: OAuthSettings | None = None
    api_keys: dict[Annotated[str, Meta(pattern=_NAME.pattern)], ApiKeySettings] = msgspec.field(default_factory=dict)
    """Static keys by name; a key's principal is ``key:NAME``."""
    policy: list[PolicyRule] | None = None
    """Who may call what. Absent: every authenticated principal may call every tool."""
    scopes_supported: list[str] = msgspec.field(default_factory=list)
    """Advertised in the protected-resource metadata (default: the required scopes)."""
    resource_name: str | None = None

    def __post_init__(self) -> None:
        self._some_method()

    def _some_method(self) -> None:
        if self.oauth is None and not self.api_keys:
            raise ValueError("configure [auth.oauth] or at least one [auth.api_keys.NAME]")
        if not re.match(r"^https?://[^/]+", self.resource):
            raise ValueError("resource: must be an absolute http(s) URI such as https://mcp.example.com/mcp")


class LimitsSettings(SettingsModel, frozen=True):
    """What one call of a tool may use; a call over a limit ends as ``isError`` with the reason.

    As ``[worker.limits]`` these are the defaults of every tool; as a component's ``limits``
    only the fields it gives replace them (see ``merged``).
    """

    timeout_s: Annotated[float, Meta(gt=0)] = DEFAULT_TOOL_TIMEOUT_S
    """Wall clock per call (epoch interruption); the call's own deadline may be shorter."""
    memory_mib: Annotated[int, Meta(ge=1, le=MAX_MEMORY_MIB)] = DEFAULT_MEMORY_MIB
    """Size limit of each of the guest's linear memories, in MiB (store limits)."""
    fuel: Annotated[int, Meta(ge=1)] | None = None
    """Wasm instructions (roughly) per call; unset means no fuel metering (it costs ~20% speed)."""
    max_concurrency: Annotated[int, Meta(ge=1)] | None = None
    """Calls of one tool a worker holds at once (running or queued); more get OVERLOADED.
    Unset: only the worker's own capacity bounds it."""
    inline: bool = False
    """Declares the tool's calls short (well under a millisecond, like a small pure function): they
    run on the worker's event loop, with no hand-off to a guest thread and none of the GIL
    contention it brings (docs/performance-analysis.md). While such a guest runs the worker does
    nothing else, so ``timeout_s`` must be at most 1 s. A guest that may ask its client (its
    component imports ``toolbus:mcp/client``) still runs in a thread when its caller relays
    questions (``Toolbus-Can-Ask``): it waits there for the answer, which only the loop delivers."""

    def __post_init__(self) -> None:
        self._inline_calls_are_short()

    def _inline_calls_are_short(self) -> None:
        if self.inline and self.timeout_s > INLINE_MAX_TIMEOUT_S:
            raise ValueError(
                f"inline: calls run on the worker's event loop, so timeout_s must be at most "
                f"{INLINE_MAX_TIMEOUT_S:g} s (it is {self.timeout_s:g} s)"
            )

    def merged(self, override: LimitsSettings | None) -> LimitsSettings:
        """These limits with the fields that ``override`` was given explicitly replaced."""
        if override is None or not override.model_fields_set:
            return self
        return self.model_copy(update={f: getattr(override, f) for f in override.model_fields_set})


class WorkerSettings(SettingsModel, frozen=True):
    concurrency: Annotated[int, Meta(ge=1)] = msgspec.field(default_factory=default_concurrency)
    """Guests running at once (threads)."""
    processes: Annotated[int, Meta(ge=1)] = msgspec.field(default_factory=default_worker_processes)
    """Worker processes ``toolbus up`` runs (``--workers N`` overrides; ``--cluster`` runs 3).
    Default: one per core. Each holds its own instances (~3 MiB each for a componentize-py
    component) and shares the compile cache."""
    pin_to_cores: bool = True
    """``toolbus up`` pins worker process *i* to the *i*-th core it may use, when it runs at least
    one worker per core (``toolbus worker --cpu N``), once the worker serves its components (its
    start uses every core): a worker's threads then never run on two cores at once, which spares
    every fresh instance's page faults a flush of the other core's TLB. With fewer workers than
    cores nothing is pinned, so each worker may use several cores."""
    queue_depth: Annotated[int, Meta(ge=0)] = 256
    """Accepted calls that may wait for a free thread; past this the worker answers OVERLOADED."""
    calls_per_principal: Annotated[int, Meta(ge=1)] | None = None
    """Calls of one principal a worker holds at once (running or queued); more get OVERLOADED
    (retryable). Below ``concurrency``, one principal's slow calls can never take every guest
    thread: another principal's call starts at once. Unset: no per-principal share — the right
    default without ``[auth]``, where every MCP client is the one principal ``anonymous``."""
    max_call_timeout_s: Annotated[float, Meta(gt=0)] = DEFAULT_MAX_CALL_TIMEOUT_S
    ask_timeout_s: Annotated[float, Meta(gt=0)] = 300.0
    """How long a guest waits for the answer to one ``toolbus:mcp/client`` request (a person
    filling a form, or a 2026-07-28 client retrying its call) before it gets ``timed-out``. The
    wait does not count against the tool's time limit, but the guest keeps its worker thread and
    its memory meanwhile (docs/guests.md)."""
    waiting_guests: Annotated[int, Meta(ge=0)] = 32
    """Guests that may wait for their client's answer at once beyond ``concurrency``: a waiting guest
    keeps its thread and its memory but not its run slot, so another call runs meanwhile. A guest
    asking while this many wait gets ``failed`` at once, so waiting guests never hold the threads
    running calls need (``0``: no guest may wait, every question fails)."""
    announce_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    """Default limits of every tool; a component's ``limits`` overrides them field by field."""
    follow_packages: bool = True
    """Serve the ``latest`` version of every package published to the registry (``toolbus
    publish``), besides the components in this file."""
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    """Serve Prometheus metrics over HTTP on this port (``/metrics``); unset: no metrics server.
    Each worker process on a host needs its own port (docs/operations.md)."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics server listens on (``0.0.0.0`` to be scraped from other hosts)."""


class TasksSettings(SettingsModel, frozen=True):
    """Durable tasks (docs/tasks.md)."""

    ack_wait_s: Annotated[float, Meta(gt=0)] = 30.0
    """A worker running a task says "in progress" every third of this; one silent this long is
    presumed dead and the task is delivered again."""
    max_deliver: Annotated[int, Meta(ge=1)] = 5
    """Deliveries of one task before it is failed."""
    ttl_s: Annotated[float, Meta(gt=0)] = 3600.0
    """How long a finished task and its result are kept, unless the client asks for less."""
    input_wait_s: Annotated[float, Meta(gt=0)] = 86400.0
    """How long a task may wait for its client's answers (``input_required``, since the last
    one) before the registry fails it: a waiting task holds no worker, only its record, but a
    client that never answers must not keep it for ever."""


DEFAULT_REDACT_KEYS = (
    "*password*",
    "*passwd*",
    "*secret*",
    "*token*",
    "*key*",
    "*credential*",
    "*private*",
    "authorization",
    "cookie",
    "*session*",
)
"""Argument keys whose values the audit trail never keeps (globs, case-insensitive). Broad on
purpose: redacting ``keyboard`` too is cheaper than keeping one ``api_key``."""


class AuditToolSettings(SettingsModel, frozen=True):
    """How one tool's arguments are audited; a field left out keeps ``[audit]``'s."""

    arguments: Literal["redact", "omit", "keep"] | None = None
    redact_keys: list[str] | None = None
    """Replaces ``[audit].redact_keys`` for this tool."""


class AuditSettings(SettingsModel, frozen=True):
    """What the gateway writes to the audit trail about each tool call (docs/security.md)."""

    arguments: Literal["redact", "omit", "keep"] = "redact"
    """``redact``: arguments kept, values under a ``redact_keys`` key (at any depth) replaced by
    ``"[redacted]"``; ``omit``: no arguments at all; ``keep``: verbatim (only for tools whose
    arguments are known to hold nothing sensitive)."""
    redact_keys: list[Annotated[str, Meta(min_length=1)]] = msgspec.field(
        default_factory=lambda: list(DEFAULT_REDACT_KEYS)
    )
    """Globs (``fnmatch``, case-insensitive) matched against every object key in the arguments."""
    max_arguments_bytes: Annotated[int, Meta(ge=0)] = 16 * 1024
    """Arguments larger than this (as JSON, after redaction) are replaced by a note of their size."""
    queue_size: Annotated[int, Meta(ge=1)] = 10_000
    """Events held while the bus is slow or down; past this the oldest are dropped (and counted)."""
    tools: dict[str, AuditToolSettings] = msgspec.field(default_factory=dict)
    """Per-tool overrides, keyed by exact tool name."""


MAX_RATE_WINDOW_S = 86_400.0
"""The longest rate-limit window: a day (the counters' bucket keeps idle keys this long)."""


class RateLimit(SettingsModel, frozen=True):
    """At most ``requests`` calls in each window of ``per_s`` seconds."""

    requests: Annotated[int, Meta(ge=1)]
    per_s: Annotated[float, Meta(gt=0, le=MAX_RATE_WINDOW_S)] = 1.0


class RateLimitSettings(SettingsModel, frozen=True):
    """Call limits shared by every gateway replica of a deployment (docs/security.md); off unless set."""

    per_principal: RateLimit | None = None
    """All calls of one principal, whatever the tool."""
    per_tool: RateLimit | None = None
    """Calls of one principal to one tool (the default of every tool)."""
    tools: dict[str, RateLimit] = msgspec.field(default_factory=dict)
    """Per-tool replacements of ``per_tool``, keyed by exact tool name."""
    on_store_error: Literal["local", "deny"] = "local"
    """When the shared counters (NATS KV) cannot be reached: ``local`` counts on each replica
    alone (so the total can reach replicas x limit), ``deny`` refuses every call."""
    store_timeout_s: Annotated[float, Meta(gt=0)] = 0.5
    """Per KV operation; after a failure the counters are not tried again for a second."""

    @property
    def enabled(self) -> bool:
        return self.per_principal is not None or self.per_tool is not None or bool(self.tools)


class TelemetrySettings(SettingsModel, frozen=True):
    """Traces and per-call log lines (docs/operations.md); metrics need no settings on the gateway."""

    otlp_endpoint: Annotated[str, Meta(pattern=r"^https?://")] | None = msgspec.field(
        default_factory=otlp_endpoint_from_env
    )
    """The collector's OTLP/HTTP URL, e.g. ``http://collector:4318``: spans go to its ``/v1/traces``
    (a URL already ending in ``/v1/traces`` is used as it is). Unset: no spans are made at all
    and the client's ``traceparent`` is passed to the worker unchanged. Default:
    ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else ``$OTEL_EXPORTER_OTLP_ENDPOINT``."""
    service_name: str | None = msgspec.field(default_factory=otel_service_name_from_env)
    """``service.name`` of the spans; default ``$OTEL_SERVICE_NAME``, else ``toolbus-gateway`` /
    ``toolbus-worker`` by role."""
    sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0
    """Share of traces started here (calls without a client ``traceparent``) that are recorded;
    a client's own sampling decision is always followed."""
    call_logs: bool = True
    """One info line per finished call on the gateway and the worker."""


class RegistrySettings(SettingsModel, frozen=True):
    answer_unknown_tools: bool = True
    """Stand in for known tools no live worker serves: answer their calls NO_WORKER (retryable)
    instead of leaving them to NATS's "no responders" (docs/bus-protocol.md, "Calls nobody can serve")."""
    audit_max_events: Annotated[int, Meta(ge=1000)] = 5_000_000
    """Cap of the audit stream (one event per call, ~300 bytes each: ~1.5 GB): beyond it the
    oldest events go, before their 30 days are up. Applies when the registry creates the stream.
    A count, not bytes, because JetStream reserves a stream's byte cap up front."""
    require_signatures: bool = False
    """Publish only ``oci://`` artifacts with a cosign signature by one of ``trusted_keys``
    (docs/signatures.md); anything else is refused before it is stored or recorded."""
    trusted_keys: list[Path] = msgspec.field(default_factory=list)
    """PEM public keys (``cosign.pub``'s format) whose signatures are trusted; a signer is shown
    by the key file's stem and fingerprint. Read when the registry starts."""

    def __post_init__(self) -> None:
        self._keys_when_required()

    def _keys_when_required(self) -> None:
        if self.require_signatures and not self.trusted_keys:
            raise ValueError("require_signatures: needs at least one key in 'trusted_keys'")


VIEW_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
"""A view's name is a path segment (``/mcp/<view>``) and a KV key: lowercase, digits, ``_`` and ``-``."""


class ViewSettings(SettingsModel, frozen=True):
    """``[views.<name>]``: a named subset of tools, served on its own MCP path ``/mcp/<name>``."""

    tools: list[Annotated[str, Meta(min_length=1, max_length=128)]] = msgspec.field(default_factory=list)
    """Tool names or globs (``calc_*``); a tool is in the view when any matches. Empty: no tool."""


class ToolOverride(SettingsModel, frozen=True):
    """Per-function settings of a component, keyed by the export name in config."""

    description: str | None = None
    task: TaskSupport | None = None
    """This tool's task support; default: the component's ``task``."""
    client_capabilities: list[ClientCapability] | None = None
    """Client capabilities this tool's calls need; default: the component's."""


class ComponentSettings(SettingsModel, frozen=True):
    """One Wasm component to serve: a built file (``path``) or a source tree to build (``source``)."""

    name: Annotated[str, Meta(pattern=_NAME.pattern)]
    path: Path | None = None
    """A ``.wasm`` component (or ``.wat`` text) on disk."""
    source: Path | None = None
    """A componentize-py project (``app.py`` plus ``wit/``), built on first use and cached."""
    world: str | None = None
    """The WIT world to build ``source`` against (default: the component name)."""
    description: str | None = None
    prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{0,64}\Z")] | None = None
    """What a component's tool names start with: ``<prefix><export>``. Default ``"<name>_"``
    (``calc_add``); ``""`` names the tools after their exports alone (``greet``). Two tools of one
    name are refused when the second component loads (``workers.routes``)."""
    task: TaskSupport = "optional"
    """Whether MCP clients may (``optional``), must (``required``) or must not (``forbidden``) run
    this component's tools as durable tasks (docs/tasks.md); ``[components.tools.X] task`` sets
    one tool's."""
    client_capabilities: list[ClientCapability] = msgspec.field(default_factory=list)
    """Client capabilities (``sampling``, ``elicitation``, ``roots``) every call of this component's
    tools needs: a client that did not declare one is refused before the call runs (-32021)."""
    tools: dict[str, ToolOverride] = msgspec.field(default_factory=dict)
    limits: LimitsSettings | None = None
    """Limits of this component's tools; only the fields given replace ``[worker.limits]``."""
    capabilities: list[str] = msgspec.field(default_factory=list)
    """Names of ``[capabilities.NAME]`` entries granted to this component; nothing else is."""
    reuse_instances: bool = False
    """Keep a warm instance per guest thread and reuse it across calls (state persists between
    callers); off gives every call a fresh Store. A trap or limit hit discards the instance."""
    kind: Literal["component", "command"] = "component"
    """``component``: a Wasm component, one tool per exported function (schemas from its WIT).
    ``command``: a WASI command module (core wasm32-wasi), one tool named ``name`` that reads
    the JSON arguments on stdin and writes the JSON result on stdout; for it ``path`` is a
    ``.wasm``/``.wat`` core module and ``source`` a C project (``*.c``) built with clang."""
    input_schema: dict[str, Any] | None = None
    """The JSON Schema (an object schema) of a command's arguments; required for commands."""
    output_schema: dict[str, Any] | None = None
    """The JSON Schema of a command's result, if it declares one."""

    @property
    def tool_prefix(self) -> str:
        """What this component's tool names start with (``prefix``, default ``"<name>_"``)."""
        return f"{self.name}_" if self.prefix is None else self.prefix

    def task_support(self, export: str, tool: str) -> TaskSupport:
        """The task support of one tool (its override, keyed by export or tool name, else ``task``)."""
        override = self.tools.get(export) or self.tools.get(tool)
        return override.task if override is not None and override.task is not None else self.task

    def needs(self, export: str, tool: str) -> tuple[ClientCapability, ...]:
        """The client capabilities one tool needs (its override, else ``client_capabilities``)."""
        override = self.tools.get(export) or self.tools.get(tool)
        chosen = override.client_capabilities if override is not None else None
        return tuple(dict.fromkeys(self.client_capabilities if chosen is None else chosen))

    def __post_init__(self) -> None:
        self._exactly_one_origin()
        self._fields_fit_the_kind()

    def _exactly_one_origin(self) -> None:
        if (self.path is None) == (self.source is None):
            raise ValueError("give exactly one of 'path' (a built component) or 'source' (a project to build)")

    def _fields_fit_the_kind(self) -> None:
        if self.kind == "component":
            for field in ("input_schema", "output_schema"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field}: only for kind = 'command' (a component's schemas come from its WIT)")
            return
        if self.world is not None:
            raise ValueError("world: only for kind = 'component'")
        if self.tools:
            raise ValueError("tools: only for kind = 'component' (a command is one tool; set its description)")
        if self.prefix is not None:
            raise ValueError("prefix: only for kind = 'component' (a command's one tool is named `name`)")
        if self.reuse_instances:
            raise ValueError("reuse_instances: only for kind = 'component' (a command runs _start once per instance)")
        if self.input_schema is None:
            raise ValueError("input_schema: required for kind = 'command' (a JSON Schema of the arguments)")
        if self.input_schema.get("type") != "object":
            raise ValueError('input_schema: must be an object schema (type = "object"): arguments are a JSON object')
        for field in ("input_schema", "output_schema"):
            schema = getattr(self, field)
            if schema is None:
                continue
            import jsonschema  # here, not at the top: only a command's schemas need it (fast restarts)

            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                where = "/".join(str(p) for p in exc.path)
                raise ValueError(
                    f"{field}: not a valid JSON Schema: {exc.message}{f' at {where}' if where else ''}"
                ) from exc


class Settings(SettingsModel, frozen=True):
    """Everything a toolbus process needs; built once at start."""

    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    registry: RegistrySettings = msgspec.field(default_factory=RegistrySettings)
    tasks: TasksSettings = msgspec.field(default_factory=TasksSettings)
    telemetry: TelemetrySettings = msgspec.field(default_factory=TelemetrySettings)
    """Traces (OTLP export) and per-call log lines (``[telemetry]``, docs/operations.md)."""
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)
    """What the gateway's audit events keep of each call (``[audit]``)."""
    rate_limits: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)
    """Per-principal and per-tool call limits (``[rate_limits]``); off unless set."""
    auth: AuthSettings | None = None
    """MCP client authentication and authorization (docs/security.md); absent = off."""
    components: list[ComponentSettings] = msgspec.field(default_factory=list)
    views: dict[Annotated[str, Meta(pattern=VIEW_NAME_PATTERN)], ViewSettings] = msgspec.field(default_factory=dict)
    """Curated subsets of tools, each on its own MCP path (docs/views.md); ``toolbus views set``
    adds or changes views at run time, and a view set there wins over one of the same name here."""
    capabilities: dict[Annotated[str, Meta(pattern=_NAME.pattern)], Capability] = msgspec.field(default_factory=dict)
    """Named grants (directories, environment variables, outbound HTTP) that components opt into."""
    state_dir: Path = msgspec.field(default_factory=default_state_dir)
    cache_dir: Path = msgspec.field(default_factory=default_cache_dir)
    log_format: str = "auto"
    """``json``, ``console``, or ``auto`` (console on a terminal, JSON otherwise)."""
    source_file: Path | None = None
    """The file these settings came from (set by ``load_settings``)."""

    def __post_init__(self) -> None:
        self._body_admits_the_payload_cap()
        self._unique_component_names()
        self._granted_capabilities_exist()

    def _body_admits_the_payload_cap(self) -> None:
        # Derived rather than a fixed default: a deployment raising the cap would otherwise find
        # its arguments refused with 413 by its own gateway.
        if self.gateway.max_body_bytes == MAX_BODY_BYTES_DERIVED:
            derived = max(DEFAULT_MAX_BODY_BYTES, self.nats.max_payload_bytes + BODY_HEADROOM_BYTES)
            msgspec.structs.force_setattr(self, "gateway", self.gateway.model_copy(update={"max_body_bytes": derived}))

    def _unique_component_names(self) -> None:
        seen: set[str] = set()
        for i, component in enumerate(self.components):
            if component.name in seen:
                raise ValueError(f"components[{i}].name: {component.name!r} is used twice")
            seen.add(component.name)

    def _granted_capabilities_exist(self) -> None:
        for i, component in enumerate(self.components):
            guest_dirs: set[str] = set()
            for name in component.capabilities:
                capability = self.capabilities.get(name)
                if capability is None:
                    raise ValueError(f"components[{i}].capabilities: {name!r} is not defined under [capabilities]")
                if isinstance(capability, HttpCapability) and component.kind == "command":
                    raise ValueError(
                        f"components[{i}].capabilities: {name!r} grants outbound HTTP, which a command "
                        "module cannot import (it only has WASI preview 1)"
                    )
                if isinstance(capability, DirCapability):
                    if capability.guest in guest_dirs:
                        raise ValueError(
                            f"components[{i}].capabilities: two directories are mounted at {capability.guest}"
                        )
                    guest_dirs.add(capability.guest)


def _describe(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def describe_validation_error(exc: ValueError) -> str:
    """Every problem of ``exc`` (a pydantic ``ValidationError``) as ``field.path: message``, joined:
    how config errors read. Any other error reads as its own message."""
    errors = getattr(exc, "errors", None)
    return "; ".join(_describe(e) for e in errors()) if callable(errors) else str(exc)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make relative paths in the file relative to the file's directory, not the cwd."""
    for key in ("state_dir", "cache_dir"):
        if isinstance(raw.get(key), str):
            raw[key] = str(base / raw[key])
    registry = raw.get("registry")
    if isinstance(registry, dict) and isinstance(registry.get("trusted_keys"), list):
        registry["trusted_keys"] = [str(base / k) if isinstance(k, str) else k for k in registry["trusted_keys"]]
    for capability in (raw.get("capabilities") or {}).values():
        if isinstance(capability, dict) and capability.get("kind") == "dir" and isinstance(capability.get("host"), str):
            capability["host"] = str(base / capability["host"])
    for component in raw.get("components", []) or []:
        if isinstance(component, dict):
            for key in ("path", "source"):
                if isinstance(component.get(key), str):
                    component[key] = str(base / component[key])


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from a TOML file (or defaults when ``path`` is None).

    ``overrides`` replace top-level sections field by field, e.g. ``nats={"url": ...}``.

    Raises:
        ConfigError: the file is missing, is not TOML, or breaks a rule; the message names
            the file, the field and the problem.
    """
    raw: dict[str, Any] = {}
    label = str(path) if path else "<defaults>"
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{label}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{label}: not valid TOML: {exc}") from exc
        _resolve_paths(raw, path.resolve().parent)
        raw["source_file"] = str(path)
    for section, values in overrides.items():
        if isinstance(values, dict):
            merged = dict(raw.get(section) or {})
            merged.update(values)
            raw[section] = merged
        else:
            raw[section] = values
    try:
        settings = Settings.model_validate(raw)
    except ValueError as exc:  # pydantic's ValidationError (see SettingsModel.model_validate)
        raise ConfigError(f"{label}: {describe_validation_error(exc)}") from exc
    for i, component in enumerate(settings.components):
        origin = component.path or component.source
        if origin is not None and not origin.exists():
            field = "path" if component.path else "source"
            raise ConfigError(f"{label}: components[{i}].{field}: {origin} does not exist")
    return settings
