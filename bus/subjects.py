"""The subject catalogue: every NATS subject, queue group, bucket and header name of toolbus.

Nothing else in the code base spells a subject. A prefix (default ``toolbus``) namespaces a
deployment, so two deployments can share one NATS account without hearing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

DEFAULT_PREFIX: Final = "toolbus"

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
"""One subject token: always ``fullmatch`` (``^...$`` would let a trailing newline through)."""
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Header:
    """NATS header names. Values are strings; times are unix epoch milliseconds."""

    REQUEST_ID: Final = "Toolbus-Request-Id"
    DEADLINE_MS: Final = "Toolbus-Deadline-Ms"
    """Absolute deadline of the call; the worker gives up (and says so) once it passes."""
    ERA: Final = "Toolbus-Era"
    """MCP protocol version the client negotiated (shapes the result, e.g. structuredContent)."""
    ERROR: Final = "Toolbus-Error"
    """Set on error replies to the numeric ``ErrorCode``; absent on results."""
    TRACEPARENT: Final = "traceparent"
    """W3C trace context: the client's, or the gateway's own span's when tracing is on."""
    EVENTS: Final = "Toolbus-Events"
    """Subject the worker publishes the call's ``CallEvent``s to (progress, logs); absent: none."""
    LOG_LEVEL: Final = "Toolbus-Log-Level"
    """Lowest MCP log level the caller wants as events (``debug`` … ``emergency``); absent: none."""
    PRINCIPAL: Final = "Toolbus-Principal"
    """Who the gateway authenticated; honoured only with a valid ``PRINCIPAL_SIGNATURE``."""
    PRINCIPAL_SIGNATURE: Final = "Toolbus-Principal-Sig"
    """A gateway's proof that it set ``PRINCIPAL`` for this request (see ``bus.principal``)."""
    CAN_ASK: Final = "Toolbus-Can-Ask"
    """On a call or resume: the client requests the caller can relay for a guest (comma-separated
    ``elicitation``, ``sampling``, ``roots``; present, even empty, only when the caller understands
    questions). Absent: a guest's ``toolbus:mcp/client`` request fails ``unsupported`` at once."""
    QUESTION: Final = "Toolbus-Question"
    """On a reply: not the call's result but a guest's question (body ``GuestQuestion``); the value
    is the suspension id the answer must name (``Subjects.resume``)."""
    WORKER: Final = "Toolbus-Worker"
    """On a question: the id of the worker holding the suspended guest (where to resume it)."""
    PAYLOAD: Final = "Toolbus-Payload"
    """A claim check (``bus.payloads``): the body is empty and the real one is this object of the
    Object Store ``PREFIX_payloads``; set on a call or a reply larger than one NATS message."""
    PAYLOAD_DIGEST: Final = "Toolbus-Payload-Digest"
    """Beside ``PAYLOAD`` (optional from plain NATS callers): the object's ``SHA-256=<base64url>``
    digest as the Object Store records it; a reader refuses an object whose digest differs."""


def as_token(text: str) -> str:
    """``text`` with every character a subject token cannot hold replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


def subject_matches(pattern: str, subject: str) -> bool:
    """True when NATS would deliver a message published to ``subject`` to a subscription on
    ``pattern`` (``*`` one token, a last ``>`` one or more)."""
    wanted, got = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(got) > index
        if index >= len(got) or (token != "*" and token != got[index]):
            return False
    return len(got) == len(wanted)


def is_valid_tool_name(name: str) -> bool:
    """True when ``name`` is an MCP tool name that is also one NATS subject token.

    MCP allows ``.`` in names; NATS tokens cannot hold it, so toolbus tool names are the
    intersection: letters, digits, ``_`` and ``-``, 1 to 128 characters.
    """
    return _TOOL_NAME.fullmatch(name) is not None


MICRO_API_PREFIX: Final = "$SRV"
"""Root of the NATS micro discovery subjects; fixed by the micro protocol, not by our prefix."""
MICRO_VERBS: Final = ("PING", "INFO", "STATS")
"""The discovery requests every micro service answers (``nats micro ls``/``info``/``stats``)."""


def micro_control(verb: str, service: str | None = None, instance_id: str | None = None) -> str:
    """A micro discovery subject: ``$SRV.VERB`` (every service), ``.SERVICE`` (every instance
    of it) or ``.SERVICE.ID`` (one instance)."""
    if verb not in MICRO_VERBS:
        raise ValueError(f"micro verb {verb!r} is not one of {', '.join(MICRO_VERBS)}")
    if instance_id is not None and service is None:
        raise ValueError("a micro instance id needs its service name")
    tokens = [MICRO_API_PREFIX, verb, *(t for t in (service, instance_id) if t is not None)]
    for token in tokens[2:]:
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"{token!r} is not a valid subject token")
    return ".".join(tokens)


RELEASE_VERBS = frozenset({"publish", "rollback", "retire", "deprecate", "versions"})
TASK_VERBS = frozenset({"submit", "get", "result", "cancel", "list"})


@dataclass(frozen=True, slots=True)
class Subjects:
    """Builds every subject of one deployment from its prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.prefix):
            raise ValueError(f"subject prefix {self.prefix!r} must be one token of letters, digits, '_' or '-'")

    # -- tool calls (core NATS request/reply) -------------------------------------------------
    def call(self, tool: str) -> str:
        """Subject a call to ``tool`` is requested on; the body is the JSON arguments."""
        if not is_valid_tool_name(tool):
            raise ValueError(f"tool name {tool!r} is not a valid subject token")
        return f"{self.prefix}.call.{tool}"

    @property
    def call_any(self) -> str:
        """Wildcard matching every tool's call subject (the registry answers unknown tools here)."""
        return f"{self.prefix}.call.*"

    def tool_from_call(self, subject: str) -> str:
        """The tool name of a call subject (inverse of ``call``)."""
        return subject[len(self.prefix) + len(".call.") :]

    def cancel(self, request_id: str) -> str:
        """Publish here (empty body) to cancel the call with ``Toolbus-Request-Id: request_id``:
        the worker running it interrupts the guest. Every worker listens; none replies."""
        if not _TOKEN.fullmatch(request_id):
            raise ValueError(f"request id {request_id!r} is not a valid subject token")
        return f"{self.prefix}.cancel.{request_id}"

    def call_events(self, token: str) -> str:
        """Where a worker publishes one call's ``CallEvent``s (progress, logs): the caller names it
        in ``Toolbus-Events`` and subscribes; ``token`` is the caller's unguessable choice. Workers may
        publish here and nowhere else on a caller's behalf (``is_call_events``), so a caller cannot
        make a worker publish on a subject of its choosing."""
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"events token {token!r} is not a valid subject token")
        return f"{self.prefix}.call_events.{token}"

    @property
    def call_events_any(self) -> str:
        """Every call's events subject."""
        return f"{self.prefix}.call_events.*"

    def is_call_events(self, subject: str) -> bool:
        """Whether ``subject`` is a call's events subject (``call_events``), and nothing else."""
        head = f"{self.prefix}.call_events."
        return subject.startswith(head) and bool(_TOKEN.fullmatch(subject[len(head) :]))

    @property
    def cancel_any(self) -> str:
        """What every worker subscribes to for cancellations."""
        return f"{self.prefix}.cancel.*"

    @property
    def worker_queue(self) -> str:
        """Queue group every worker joins on call subjects, so each call reaches one worker."""
        return f"{self.prefix}-workers"

    @property
    def worker_ping_any(self) -> str:
        return f"{self.prefix}.worker.*.ping"

    def worker_ping(self, worker_id: str) -> str:
        """Each worker answers here; "no responders" tells the registry the worker is gone."""
        if not _TOKEN.fullmatch(worker_id):
            raise ValueError(f"worker id {worker_id!r} is not a valid subject token")
        return f"{self.prefix}.worker.{worker_id}.ping"

    def resume(self, worker_id: str) -> str:
        """Request ``GuestAnswer`` (signed like a call) → the call's next reply: its result or the
        guest's next question. Only the worker ``worker_id`` listens: it holds the suspended guest."""
        if not _TOKEN.fullmatch(worker_id):
            raise ValueError(f"worker id {worker_id!r} is not a valid subject token")
        return f"{self.prefix}.resume.{worker_id}"

    @property
    def resume_any(self) -> str:
        return f"{self.prefix}.resume.*"

    # -- resources, prompts and completion of components -------------------------------------
    def surface(self, component: str) -> str:
        """Subject of ``component``'s resource reads, prompt gets and completions (a
        ``SurfaceRequest`` body; the reply is its MCP result JSON or an ``ErrorReply``)."""
        if not _TOKEN.fullmatch(component):
            raise ValueError(f"component name {component!r} is not a valid subject token")
        return f"{self.prefix}.surface.{component}"

    @property
    def surface_any(self) -> str:
        return f"{self.prefix}.surface.*"

    def component_from_surface(self, subject: str) -> str:
        """The component of a surface subject (inverse of ``surface``)."""
        return subject[len(self.prefix) + len(".surface.") :]

    @property
    def resource_updated(self) -> str:
        """Workers publish ``ResourceUpdated`` here when a guest calls ``notify.resource-updated``;
        every gateway relays it to the clients subscribed to the URI."""
        return f"{self.prefix}.notify.resource-updated"

    # -- registry -----------------------------------------------------------------------------
    @property
    def registry_hello(self) -> str:
        """A starting registry publishes here; every worker re-announces at once."""
        return f"{self.prefix}.registry.hello"

    @property
    def announce(self) -> str:
        """Workers publish ``WorkerAnnouncement`` here."""
        return f"{self.prefix}.registry.announce"

    @property
    def registry_list(self) -> str:
        """Request ``ToolListRequest`` → reply ``ToolList``."""
        return f"{self.prefix}.registry.tools.list"

    @property
    def registry_get(self) -> str:
        """Request ``ToolGetRequest`` → reply ``ToolDescriptor`` or ``ErrorReply``."""
        return f"{self.prefix}.registry.tools.get"

    @property
    def registry_queue(self) -> str:
        """Queue group of registry replicas."""
        return f"{self.prefix}-registry"

    # -- releases (publish, rollback, retire, deprecate) --------------------------------------
    def registry_release(self, verb: str) -> str:
        """Request subject of a release verb: ``publish``, ``rollback``, ``retire``, ``deprecate``,
        ``versions`` (see ``schemas.wire`` for each request and reply)."""
        if verb not in RELEASE_VERBS:
            raise ValueError(f"unknown release verb {verb!r}")
        return f"{self.prefix}.registry.{verb}"

    @property
    def worker_introspect(self) -> str:
        """Request ``IntrospectRequest`` → ``IntrospectReply``: any one worker (queue group) loads
        an artifact and derives its tools, so the registry never runs Wasm itself."""
        return f"{self.prefix}.workers.introspect"

    def event(self, kind: str) -> str:
        """Where ``RegistryEvent`` of ``kind`` is published (``published``, ``worker_joined``, …)."""
        if not _TOKEN.fullmatch(kind):
            raise ValueError(f"event kind {kind!r} is not a valid subject token")
        return f"{self.prefix}.events.{kind}"

    @property
    def events_any(self) -> str:
        """Every registry event."""
        return f"{self.prefix}.events.>"

    # -- durable tasks ------------------------------------------------------------------------
    def task_request(self, verb: str) -> str:
        """Request subject of a task verb (``submit``, ``get``, ``result``, ``cancel``, ``list``)."""
        if verb not in TASK_VERBS:
            raise ValueError(f"unknown task verb {verb!r}")
        return f"{self.prefix}.tasks.{verb}"

    def task_work(self, tool: str) -> str:
        """Work-queue subject of ``tool``'s tasks (a ``TaskWork`` per task)."""
        if not is_valid_tool_name(tool):
            raise ValueError(f"tool name {tool!r} is not a valid subject token")
        return f"{self.prefix}.tasks.work.{tool}"

    @property
    def task_work_any(self) -> str:
        return f"{self.prefix}.tasks.work.*"

    def task_status(self, task_id: str) -> str:
        """Every change of a task's status is published here (a ``TaskRecord``)."""
        if not _TOKEN.fullmatch(task_id):
            raise ValueError(f"task id {task_id!r} is not a valid subject token")
        return f"{self.prefix}.tasks.status.{task_id}"

    @property
    def task_status_any(self) -> str:
        return f"{self.prefix}.tasks.status.>"

    @property
    def tasks_max_deliveries_advisory(self) -> str:
        """JetStream's advisory for a task delivered ``max_deliver`` times without an ack."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.tasks_stream}.*"

    @property
    def tasks_stream(self) -> str:
        """Work-queue stream holding the tasks not yet done."""
        return f"{self.prefix}_TASKS"

    def task_consumer(self, tool: str) -> str:
        """Durable pull consumer shared by every worker serving ``tool``."""
        return f"tasks-{tool}"

    @property
    def audit_stream(self) -> str:
        """Stream of the audit trail (``registry.audit_stream``), capturing ``audit_subjects``."""
        return f"{self.prefix}_AUDIT"

    @property
    def audit_subjects(self) -> list[str]:
        """Registry events, task transitions, and events published for the trail alone."""
        return [self.events_any, self.task_status_any, self.audit_any]

    @property
    def audit_any(self) -> str:
        """Every event published for the audit trail alone (the gateway's calls and auth failures)."""
        return f"{self.prefix}.audit.>"

    def audit_call(self, tool: str) -> str:
        """Where the gateway publishes a ``CallAuditEvent`` for a finished call of ``tool``.

        A name that is no tool (a client may call anything) is made a token (``as_token``); the
        event itself carries the name as sent.
        """
        return f"{self.prefix}.audit.call.{as_token(tool)[:128] or '-'}"

    def audit_auth(self, reason: str) -> str:
        """Where the gateway publishes an ``AuthFailureEvent`` (``reason``: ``missing_token``, …)."""
        return f"{self.prefix}.audit.auth.{as_token(reason)[:64] or '-'}"

    def audit_console(self, action: str) -> str:
        """Where the gateway publishes a ``ConsoleActionEvent`` (``action``: ``rollback``, ``cancel``, …)."""
        return f"{self.prefix}.audit.console.{as_token(action)[:64] or '-'}"

    @property
    def rate_limits_bucket(self) -> str:
        """KV bucket: one key per rate limit and principal (and tool) → ``RateWindow``."""
        return f"{self.prefix}_ratelimits"

    @property
    def tasks_bucket(self) -> str:
        """KV bucket: task id → ``TaskRecord``."""
        return f"{self.prefix}_tasks"

    @property
    def task_results_store(self) -> str:
        """Object Store bucket: task id → the task's ``CallToolResult`` (any size)."""
        return f"{self.prefix}_task_results"

    @property
    def payloads_store(self) -> str:
        """Object Store bucket of claim checks (``bus.payloads``): bodies larger than one message,
        named by unguessable random names, removed after a TTL."""
        return f"{self.prefix}_payloads"

    def is_deployment_subject(self, subject: str) -> bool:
        """Whether ``subject`` is one of this deployment's own (events, notifications), not a reply inbox."""
        return subject.startswith(f"{self.prefix}.")

    # -- JetStream ----------------------------------------------------------------------------
    @property
    def tools_bucket(self) -> str:
        """KV bucket: tool name → ``ToolDescriptor``."""
        return f"{self.prefix}_tools"

    @property
    def surfaces_bucket(self) -> str:
        """KV bucket: component name → ``ComponentSurface`` (its resources, templates, prompts)."""
        return f"{self.prefix}_surfaces"

    @property
    def views_bucket(self) -> str:
        """KV bucket: view name → ``ViewSpec`` (views set at run time, ``toolbus views set``)."""
        return f"{self.prefix}_views"

    @property
    def packages_bucket(self) -> str:
        """KV bucket of releases: ``version.NAME.VERSION`` → ``PackageVersion``, ``alias.NAME.ALIAS`` → ``Alias``."""
        return f"{self.prefix}_packages"

    @property
    def artifacts_store(self) -> str:
        """Object Store bucket: Wasm artifacts named by the hex sha256 of their bytes."""
        return f"{self.prefix}_artifacts"

    @property
    def workers_bucket(self) -> str:
        """Reserved name of a KV bucket of workers. Not created: the registry keeps worker
        liveness in memory (``registry.catalogue``), from announcements and pings."""
        return f"{self.prefix}_workers"
