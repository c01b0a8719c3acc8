"""Wire types: every message that crosses the bus, as frozen msgspec Structs.

Fields are added with defaults, never renamed or removed; a breaking change gets a new type.
Names that MCP fixes (``isError``, ``structuredContent``, ``inputSchema``…) are camelCase on
the wire so a CallToolResult from a worker is the MCP JSON as-is.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

UNSET = msgspec.UNSET
"""Marker for an absent optional field (omitted on the wire rather than sent as null)."""

JsonSchema = dict[str, Any]
TaskSupport = Literal["forbidden", "optional", "required"]
"""How a tool takes part in durable tasks (MCP ``ToolExecution.taskSupport``)."""
ClientCapability = Literal["sampling", "elicitation", "roots"]
"""A client capability a tool may need (a key of MCP ``ClientCapabilities``)."""
"""A JSON Schema document. Free-form by nature, so it stays a mapping inside the Structs."""


class TextContent(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    """MCP text content block."""

    text: str


class ImageContent(msgspec.Struct, frozen=True, tag_field="type", tag="image", rename="camel"):
    """MCP image content block (base64 data)."""

    data: str
    mime_type: str


class AudioContent(msgspec.Struct, frozen=True, tag_field="type", tag="audio", rename="camel"):
    """MCP audio content block (base64 data)."""

    data: str
    mime_type: str


class ResourceContents(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """MCP ``TextResourceContents`` (``text``) or ``BlobResourceContents`` (``blob``, base64)."""

    uri: str
    mime_type: str | None = None
    text: str | None = None
    blob: str | None = None


class EmbeddedResource(msgspec.Struct, frozen=True, tag_field="type", tag="resource"):
    """MCP embedded resource content block."""

    resource: ResourceContents


Content = TextContent | ImageContent | AudioContent | EmbeddedResource


class CallToolResult(msgspec.Struct, frozen=True, rename="camel"):
    """The MCP ``CallToolResult``: what a worker replies to a call, byte for byte.

    ``isError`` is always written (as the SDK does); absent ``structuredContent`` is omitted.
    """

    content: list[Content]
    structured_content: Any | msgspec.UnsetType = UNSET
    is_error: bool = False


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """A typed protocol failure: a stable code from ``ErrorCode`` and a readable message."""

    code: int
    message: str
    retryable: bool = False
    capabilities: list[str] = msgspec.field(default_factory=list)
    """``MISSING_CAPABILITY``: the client capabilities the tool requires and the client lacks."""


class ErrorReply(msgspec.Struct, frozen=True):
    """The reply body of a failed request; its code is also in the ``Toolbus-Error`` header."""

    error: ErrorBody


class ToolDescriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One tool as the catalogue knows it: MCP fields plus where it comes from."""

    name: str
    description: str = ""
    input_schema: JsonSchema
    output_schema: JsonSchema | None = None
    component: str = ""
    """Name of the component (from config) that exports the function."""
    export: str = ""
    """Path of the exported function inside the component, e.g. ``add`` or ``math/add``."""
    digest: str = ""
    """``sha256:<hex>`` of the Wasm bytes the tool runs."""
    version: str = ""
    """Tool version; empty until the registry assigns versions."""
    task_support: TaskSupport = "optional"
    """Whether MCP clients may (``optional``), must (``required``) or must not (``forbidden``) run
    the tool as a durable task: ``execution.taskSupport`` in 2025-11-25 ``tools/list``, and what the
    gateway honours in both eras (``gateway.task_frontend.task_route``). Absent (an older worker's
    announcement) means ``optional``, what every tool was before the setting existed."""
    client_capabilities: tuple[ClientCapability, ...] = ()
    """Client capabilities every call needs (a tool that will ask the client for sampling, say):
    the gateway refuses a call from a client that did not declare one, before it runs (-32021,
    ``gateway.server.ToolFrontend.require_client_capabilities``)."""
    asks: bool = False
    """The tool's component imports ``toolbus:mcp/client``: a call may be suspended on a question
    to the client, so gateways never serve it on their hot path (docs/guests.md)."""


class WorkerAnnouncement(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A worker telling the registry what it serves (sent at start and re-sent periodically)."""

    worker_id: str
    tools: list[ToolDescriptor]
    concurrency: int = 1
    in_flight: int = 0
    state: Literal["ready", "draining", "stopped"] = "ready"
    surfaces: list[ComponentSurface] = msgspec.field(default_factory=list)
    """Resources, prompts and completion of its components (those that export any)."""
    loading: list[str] = msgspec.field(default_factory=list)
    """Configured components the worker is still building or loading (a worker serves each
    component's tools as soon as it is loaded, so ``ready`` with a non-empty ``loading`` is a
    worker part-way through its start); empty once it serves all of them."""


class ToolList(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """Reply of the registry's list request: one page of tools."""

    tools: list[ToolDescriptor]
    next_cursor: str | None = None
    live_workers: dict[str, int] = msgspec.field(default_factory=dict)
    """Tool name → how many live workers serve it (only in the registry's reply)."""


class ToolListRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """Body of the registry's list request (an empty body means the first page)."""

    cursor: str | None = None
    limit: int = 1000


class ToolGetRequest(msgspec.Struct, frozen=True):
    """Body of the registry's get request."""

    name: str


# -- releases: published packages, their versions and aliases -------------------------------------


class PackageVersion(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One published version of a package (KV ``version.NAME.VERSION``); immutable but for
    ``deprecated`` and ``retired``."""

    name: str
    version: str
    digest: str
    """``sha256:<hex>`` of the Wasm bytes, also the artifact's name in the Object Store."""
    tools: list[ToolDescriptor]
    """The tools as derived when it was published (``version`` and ``digest`` filled in)."""
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    """The component's config (``ComponentSettings`` fields but name and path) it runs with."""
    published_at: float = 0.0
    source: str = ""
    """Where it was published from (a file name or an ``oci://`` reference), for people."""
    deprecated: str = ""
    """Why it is deprecated (empty: it is not); shown in its tools' descriptions."""
    retired: bool = False
    signer: str = ""
    """The trusted key whose cosign signature was verified when it was published (empty: unsigned)."""
    signer_key: str = ""
    """That key's fingerprint, ``sha256:<16 hex>`` of its DER public key."""


class ViewSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """KV ``PREFIX_views``, key = the view's name: which tools the view ``/mcp/<name>`` serves."""

    tools: list[str] = msgspec.field(default_factory=list)
    """Tool names or globs (``fnmatch``); a tool is in the view when any matches."""
    updated_at: float = 0.0


class Alias(msgspec.Struct, frozen=True, rename="camel"):
    """KV ``alias.NAME.ALIAS``: which version ``latest`` (or a named alias) points at."""

    version: str
    updated_at: float = 0.0


class PublishRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """Publish an artifact already in the Object Store as ``name`` at ``version``."""

    name: str
    version: str
    digest: str = ""
    """The artifact already in the Object Store; empty when ``oci`` names it instead."""
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    source: str = ""
    aliases: list[str] = msgspec.field(default_factory=lambda: ["latest"])
    """Aliases to point at the new version (``latest`` unless told otherwise)."""
    oci: str = ""
    """An ``oci://`` reference the registry pulls itself, verifying its cosign signature (docs/signatures.md)."""


class ReleaseRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """Rollback (``version`` required; ``alias`` defaults to latest), retire (no ``version``:
    the whole package), deprecate (``reason``), or list versions (``name`` only)."""

    name: str
    version: str = ""
    alias: str = "latest"
    reason: str = ""


class VersionSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    version: str
    digest: str
    tools: list[str]
    aliases: list[str] = msgspec.field(default_factory=list)
    published_at: float = 0.0
    deprecated: str = ""
    retired: bool = False
    signer: str = ""
    signer_key: str = ""


class ReleaseReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """What every release verb answers: the package's versions after the change."""

    name: str
    versions: list[VersionSummary]
    message: str = ""


class IntrospectRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """Ask a worker to load artifact ``digest`` as package ``name`` and derive its tools."""

    name: str
    digest: str
    settings: dict[str, Any] = msgspec.field(default_factory=dict)


class IntrospectReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    tools: list[ToolDescriptor]
    worker_id: str = ""


class RegistryEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A change of the catalogue, published on ``PREFIX.events.<kind>``."""

    kind: Literal["published", "rolled_back", "retired", "deprecated", "worker_joined", "worker_left"]
    name: str = ""
    version: str = ""
    digest: str = ""
    worker_id: str = ""
    tools: list[str] = msgspec.field(default_factory=list)
    at: float = 0.0
    signer: str = ""
    """Who signed the published artifact (``published`` only; empty: unsigned)."""
    signer_key: str = ""


# -- events of one call: progress and logs, published to the subject in its Toolbus-Events header --


class ProgressEvent(msgspec.Struct, frozen=True, tag_field="type", tag="progress", omit_defaults=True):
    """The guest reported progress (MCP ``notifications/progress`` without the token)."""

    progress: float
    total: float | None = None
    message: str | None = None


class LogEvent(msgspec.Struct, frozen=True, tag_field="type", tag="log", omit_defaults=True):
    """The guest logged (MCP ``notifications/message``)."""

    level: str
    data: Any
    logger: str | None = None


CallEvent = ProgressEvent | LogEvent

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
"""MCP log levels (RFC 5424 severities), least severe first."""
_SEVERITY = {level: rank for rank, level in enumerate(LOG_LEVELS)}


def log_severity(level: str | None) -> int | None:
    """The rank of an MCP log level (``debug`` = 0), or None for anything else."""
    return _SEVERITY.get(level) if level is not None else None


# -- durable tasks ----------------------------------------------------------------------------------

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
"""MCP task statuses; the last three are terminal."""
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


class TaskRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One task (KV ``PREFIX_tasks``, key = task id): written before its id is handed out."""

    task_id: str
    tool: str
    principal: str
    status: TaskStatus
    """Always on the wire (no default): readers of the record and of the audit trail need it."""
    status_message: str = ""
    created_at: float = 0.0
    """Unix time, seconds."""
    updated_at: float = 0.0
    ttl_ms: int = 0
    """How long the record and its result are kept after the task ends (MCP ``ttl``)."""
    poll_interval_ms: int = 1000
    running: bool = False
    """Working and on a worker (False while it waits in the queue)."""
    attempts: int = 0
    """Deliveries to a worker so far (a crashed worker's task is delivered again)."""
    worker_id: str = ""
    result_stored: bool = False
    """The CallToolResult is in the results store under the task id."""
    crashed: bool = False
    """The guest did not return (trapped, exited or hit a limit): a protocol-level failure. The
    stored result says why; 2026-07-28 shows the task ``failed`` with an ``error``, not ``completed``."""
    input_requests: dict[str, Any] = msgspec.field(default_factory=dict)
    """Status ``input_required``: the guest's question still unanswered (key → ``{"method", "params"}``),
    shown by tasks/get; ``tasks/update`` answers keys of it (``stores.TaskStore.answer``)."""
    answered: dict[str, Any] = msgspec.field(default_factory=dict)
    """Answers received so far to the keys of the pending question (partial fulfilment)."""
    rounds: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Answers to the guest's earlier questions, in order: the next run replays them
    (``workers.sandbox.replay``)."""
    arguments: dict[str, Any] | None = None
    """While the task waits for input: its arguments (its work was acknowledged; the answered
    question queues it again with them)."""
    arguments_object: str = ""
    """While the task waits for input, when its arguments were too large for one message: the
    task-results object holding them (``TaskWork.arguments_object``), queued again with them."""
    capabilities: list[str] = msgspec.field(default_factory=list)
    """While the task waits for input: the client capabilities its questions may need."""


class TaskSubmit(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """Create a task (``PREFIX.tasks.submit``): run ``tool`` with ``arguments`` in the background."""

    tool: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    ttl_ms: int | None = None
    principal: str = ""
    """Set by a trusted gateway; a plain NATS submitter gets the principal ``nats``."""


class TaskWork(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The work-queue message of a task (``PREFIX.tasks.work.<tool>``)."""

    task_id: str
    tool: str
    arguments: dict[str, Any]
    arguments_object: str = ""
    """Set when the arguments are too large for one message: they are this object of the task
    results Object Store (``arguments`` is then empty), kept as long as the task."""
    rounds: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Answers to the questions the guest asked in earlier runs of this task, in order: replayed
    to it (``workers.sandbox.replay``); its first unanswered question parks the task ``input_required``."""
    capabilities: list[str] = msgspec.field(default_factory=list)
    """The client capabilities its guest's questions may need (none: it cannot ask; the
    2026-07-28 tasks extension answers them with ``tasks/update``)."""


class TaskQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """``PREFIX.tasks.{get,result,cancel,list}``: one task by id (or a page of them) for a principal."""

    task_id: str = ""
    principal: str = ""
    cursor: str = ""
    limit: int = 100


class TaskList(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    tasks: list[TaskRecord]
    next_cursor: str = ""


# -- the audit trail and rate limits (gateway) ------------------------------------------------------


class CallAuditEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One finished ``tools/call`` through a gateway (``PREFIX.audit.call.<tool>``)."""

    tool: str
    principal: str
    auth_method: str
    """How the principal was verified: ``jwt``, ``api-key`` or ``none``."""
    era: str
    request_id: str
    outcome: str
    """``ok``, ``tool_error``, ``invalid_arguments``, ``cancelled``, or a failure (``unknown_tool``…)."""
    started_at: float
    """Unix time, seconds."""
    duration_ms: float
    trace_id: str = ""
    """From the call's W3C ``traceparent``, when it had one."""
    error: str = ""
    arguments: Any | msgspec.UnsetType = UNSET
    """As the audit settings allow: redacted, verbatim, or absent (``omit``)."""
    arguments_redacted: int = 0
    """How many values were replaced by ``"[redacted]"``."""


class AuthFailureEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A request the gateway refused for who it came from (``PREFIX.audit.auth.<reason>``)."""

    reason: str
    """``missing_token``, ``invalid_token``, ``expired``, ``wrong_audience``, ``insufficient_scope``,
    ``forbidden_tool``, ``rate_limited``, …"""
    status: int
    """The HTTP status answered (401, 403, 429…)."""
    at: float
    """Unix time, seconds."""
    subject: str = ""
    """Who the credential claimed to be, if it said; never verified."""
    auth_method: str = ""
    remote: str = ""
    """The client's address (``host:port``)."""
    method: str = ""
    """The MCP method (``tools/call``…), or the HTTP method when the body was not read."""
    tool: str = ""
    detail: str = ""
    repeated: int = 0
    """Refusals alike this one that followed it within the gateway's window, counted instead of
    sent one by one (``gateway.audit_trail.Refusals``); this event is their summary. 0: a first one."""


class ConsoleActionEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """An operator's action in the web console (``PREFIX.audit.console.<action>``), done or refused."""

    action: str
    """A release verb (``rollback``, ``deprecate``, ``retire``) or ``cancel`` (a task)."""
    principal: str
    """The operator who asked (``key:NAME``, ``jwt:ISSUER#SUB``)."""
    target: str
    """What it acted on: ``PACKAGE VERSION`` (or ``PACKAGE``), or a task id."""
    outcome: Literal["ok", "refused"]
    at: float
    """Unix time, seconds."""
    detail: str = ""
    """The registry's or the task store's message (why it was refused)."""


class RateWindow(msgspec.Struct, frozen=True, array_like=True):
    """One rate limit's count in KV (``PREFIX_ratelimits``): calls taken in fixed window ``window``."""

    window: int
    """``floor(unix time / per_s)`` of the window counted."""
    used: int


class GuestQuestion(msgspec.Struct, frozen=True):
    """A reply that is a guest's question, not a result (header ``Toolbus-Question``).

    ``requests`` maps a key the guest chose to one MCP client request: ``{"method", "params"}``
    (``elicitation/create``, ``sampling/createMessage``, ``roots/list``). Answer them all in one
    ``GuestAnswer`` to ``Subjects.resume(worker)``.
    """

    requests: dict[str, dict[str, Any]]


class GuestAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """Body of a resume request: the answers to a suspended guest's question, or why there are none.

    ``error`` is ``failed``, ``cancelled``, ``unsupported`` or ``timed-out`` (the ``ask-error``
    case the guest gets), ``message`` its text; without it ``answers`` holds one result per key.
    """

    suspension: str
    answers: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str | None = None
    message: str = ""


# -- resources, prompts and completion a component serves (toolbus:mcp/resources|prompts|completion) --


class ResourceDescriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One resource with a fixed URI, as the component lists it (MCP ``Resource`` fields)."""

    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None


class ResourceTemplateDescriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """A family of resources (MCP ``ResourceTemplate``): an RFC 6570 level-1 ``uriTemplate``."""

    uri_template: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None


class PromptArgument(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One argument of a prompt (MCP ``PromptArgument``)."""

    name: str
    title: str | None = None
    description: str | None = None
    required: bool = False


class PromptDescriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One prompt: ``name`` is its MCP name (the component's tool prefix plus the guest's name)."""

    name: str
    guest_name: str
    """The name the component itself knows it by (what ``prompts.get`` is called with)."""
    title: str | None = None
    description: str | None = None
    arguments: list[PromptArgument] = msgspec.field(default_factory=list)


class ComponentSurface(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """What a component serves besides tools (KV ``PREFIX_surfaces``, key = component name).

    Listed once when the worker loads the component; requests for it go to
    ``Subjects.surface(component)``.
    """

    component: str
    resources: list[ResourceDescriptor] = msgspec.field(default_factory=list)
    templates: list[ResourceTemplateDescriptor] = msgspec.field(default_factory=list)
    prompts: list[PromptDescriptor] = msgspec.field(default_factory=list)
    completion: bool = False
    """It exports ``toolbus:mcp/completion``."""
    digest: str = ""
    version: str = ""
    """The published package version it comes from; empty for a worker's configured component."""

    @property
    def empty(self) -> bool:
        """True when it serves nothing (a component exporting none of the interfaces)."""
        return not (self.resources or self.templates or self.prompts or self.completion)


class ReadResource(msgspec.Struct, frozen=True, tag_field="method", tag="resources/read"):
    """Read one resource of a component (a fixed URI or one matching a template)."""

    uri: str


MAX_ASK_ROUNDS: Final = 16
"""Questions a guest that is re-run with its answers (a prompt, a task: ``workers.sandbox.replay``)
may ask in all; each is a full re-run, so a guest asking in a loop is stopped here."""


class GetPrompt(msgspec.Struct, frozen=True, tag_field="method", tag="prompts/get", omit_defaults=True):
    """Render one prompt; ``name`` is the guest's own name for it."""

    name: str
    arguments: dict[str, str] = msgspec.field(default_factory=dict)
    rounds: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Answers to the questions the guest asked in earlier runs, in order (``workers.sandbox.replay``):
    a prompt that asks is re-run with them; a question none answers is the reply (``GuestQuestion``)."""
    capabilities: list[str] = msgspec.field(default_factory=list)
    """The client capabilities its questions may need (``Toolbus-Can-Ask``'s names)."""


class Complete(msgspec.Struct, frozen=True, tag_field="method", tag="completion/complete", omit_defaults=True):
    """Complete an argument of a prompt (``ref_type`` ``prompt``: its guest name) or a resource
    template (``resource``: its URI template)."""

    ref_type: Literal["prompt", "resource"]
    ref: str
    argument: str
    value: str = ""
    context: dict[str, str] = msgspec.field(default_factory=dict)


SurfaceRequest = ReadResource | GetPrompt | Complete
"""The body of a request on ``Subjects.surface(component)``."""


class ReadResourceReply(msgspec.Struct, frozen=True):
    """MCP ``ReadResourceResult`` (without the era's caching fields, which the gateway adds)."""

    contents: list[ResourceContents]


class PromptMessage(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: Content


class GetPromptReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """MCP ``GetPromptResult``."""

    messages: list[PromptMessage]
    description: str | None = None


class CompleteReply(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """MCP ``CompleteResult.completion``: at most 100 values."""

    values: list[str]
    total: int | None = None
    has_more: bool = False


class ResourceUpdated(msgspec.Struct, frozen=True, rename="camel"):
    """A guest said a resource changed (``toolbus:mcp/notify``), on ``Subjects.resource_updated``."""

    uri: str
    component: str
