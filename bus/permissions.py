"""Who may do what on the bus: one table per deployment, from which everything else is made.

Two tables, both built from the subject catalogue (``bus.subjects``):

- ``core_rows``: each core subject (in the wildcard form the permission names) and, per role,
  ``p`` (may publish) and/or ``s`` (may subscribe);
- ``store_rows``: each JetStream stream — the work queue, the audit trail, every KV bucket and
  object store (each is a stream) — and, per role, ``r`` (read: stream info, get a message,
  create consumers and ack or flow-control their deliveries), ``w`` (write: publish to the
  stream's subjects; for an object store also purge, which replacing an object does) and ``a``
  (administer: create the stream — each has exactly one such provisioner, the registry — purge it,
  delete messages).

``role_permissions`` turns a role's column into nats-server ``permissions`` (publish and
subscribe allow-lists); ``markdown_table`` renders both tables for docs/security.md (a test
checks the two agree); tests/bus/test_permissions.py walks every row against a real nats-server.
JetStream API subjects are named per stream, never ``$JS.API.CONSUMER.>``: a role that may
not read a stream cannot create a consumer on it, so it cannot read it.

Creating a stream is reading everything: a stream may *source* any other stream of the account
(the audit trail included) and capture any subject (another role's replies), and nats-server
checks neither against the creator's permissions. So only a stream's provisioner may create it;
every other role may only look it up (``STREAM.INFO``) and waits for it (``bus.provisioning``).
No role may update or delete a stream (changing its subjects or sources is the same power, and
toolbus never does it at run time): an operator changes a stream with the server's own tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from bus.connection import inbox_prefix
from bus.subjects import MICRO_API_PREFIX, RELEASE_VERBS, Subjects

ROLES: Final = ("registry", "worker", "gateway", "operator")
DEFAULT_INBOX: Final = "_INBOX"
"""Where NATS clients receive replies unless told otherwise."""
"""One NATS user per role. ``operator`` is for people and the operator verbs of the CLI."""


@dataclass(frozen=True)
class CoreRow:
    """One core subject and what each role may do with it (``p`` publish, ``s`` subscribe)."""

    subject: str
    what: str
    access: dict[str, str] = field(default_factory=dict)

    def allows(self, role: str, act: str) -> bool:
        return act in self.access.get(role, "")


@dataclass(frozen=True)
class StoreRow:
    """One JetStream stream and what each role may do with it (``r``, ``w``, ``a``)."""

    label: str
    stream: str
    writes: tuple[str, ...]
    """The subjects writing to the stream means publishing to."""
    what: str
    access: dict[str, str] = field(default_factory=dict)
    object_store: bool = False

    def allows(self, role: str, act: str) -> bool:
        return act in self.access.get(role, "")


def core_rows(subjects: Subjects) -> list[CoreRow]:
    """The core subjects of the deployment of ``subjects`` and who may use each."""
    s = subjects
    return [
        CoreRow(s.call_any, "tool calls", {"gateway": "p", "operator": "p", "worker": "s", "registry": "s"}),
        CoreRow(s.cancel_any, "cancel a call or task", {"gateway": "p", "registry": "p", "worker": "s"}),
        CoreRow(s.call_events_any, "a call's progress and logs", {"worker": "p", "gateway": "s", "operator": "s"}),
        CoreRow(s.resume_any, "answer a guest's question", {"gateway": "p", "worker": "s"}),
        CoreRow(s.worker_ping_any, "liveness probe of one worker", {"registry": "p", "worker": "s"}),
        CoreRow(s.worker_introspect, "derive a package's tools", {"registry": "p", "worker": "s"}),
        CoreRow(s.registry_hello, "a registry starting", {"registry": "ps", "worker": "s"}),
        # The gateway's web console (gateway.console) shows live workers, registry events and the
        # audit tail, and sends the release verbs for the operator signed in to it — all but
        # publish, which names any oci:// reference for workers to run: not for the tier facing
        # the internet (tests/bus/test_permissions.py).
        CoreRow(s.announce, "worker announcements", {"worker": "p", "registry": "s", "operator": "s", "gateway": "s"}),
        # The registry asks itself too: compose's healthcheck is `toolbus tools` as the registry user.
        CoreRow(
            f"{s.prefix}.registry.tools.*", "catalogue lookups", {"gateway": "p", "operator": "p", "registry": "ps"}
        ),
        *(
            CoreRow(
                s.registry_release(verb),
                f"release verb {verb}",
                {"operator": "p", "registry": "s", **({"gateway": "p"} if verb != "publish" else {})},
            )
            for verb in sorted(RELEASE_VERBS)
        ),
        CoreRow(
            s.surface_any, "resource reads, prompt gets, completions", {"gateway": "p", "operator": "p", "worker": "s"}
        ),
        CoreRow(s.resource_updated, "a guest's resource changed", {"worker": "p", "gateway": "s"}),
        CoreRow(s.events_any, "registry events", {"registry": "p", "operator": "s", "gateway": "s"}),
        CoreRow(f"{s.prefix}.tasks.*", "task requests (submit, get, list…)", {"operator": "p", "registry": "s"}),
        CoreRow(s.task_status_any, "task status changes", {"registry": "p", "worker": "p", "gateway": "ps"}),
        # The gateway publishes here as the audit stream's writer (its row below) and listens for
        # the console's live tail.
        CoreRow(s.audit_any, "audit events as they are published (the console's live tail)", {"gateway": "ps"}),
        CoreRow(s.tasks_max_deliveries_advisory, "a task delivered too often", {"registry": "s"}),
        CoreRow(f"{MICRO_API_PREFIX}.>", "NATS micro discovery", {"worker": "s", "operator": "p"}),
    ]


def store_rows(subjects: Subjects) -> list[StoreRow]:
    """The JetStream streams of the deployment of ``subjects`` and who may use each."""
    s = subjects

    def kv(bucket: str, what: str, access: dict[str, str]) -> StoreRow:
        return StoreRow(f"KV {bucket}", f"KV_{bucket}", (f"$KV.{bucket}.>",), what, access)

    def obj(bucket: str, what: str, access: dict[str, str]) -> StoreRow:
        return StoreRow(f"object store {bucket}", f"OBJ_{bucket}", (f"$O.{bucket}.>",), what, access, True)

    return [
        kv(s.tools_bucket, "the tool catalogue", {"registry": "rwa", "gateway": "r", "operator": "r"}),
        kv(s.surfaces_bucket, "resources, prompts, completion", {"registry": "rwa", "gateway": "r", "operator": "r"}),
        kv(s.packages_bucket, "package versions", {"registry": "rwa", "worker": "r", "operator": "r"}),
        kv(s.views_bucket, "curated views of tools", {"registry": "rwa", "gateway": "r", "operator": "rw"}),
        kv(s.tasks_bucket, "task records", {"registry": "rwa", "worker": "rw", "gateway": "rw", "operator": "r"}),
        # The registry provisions it even where no rate limit is set: a missing bucket is one a
        # gateway could otherwise create with sources or subjects of its choosing.
        kv(s.rate_limits_bucket, "rate-limit windows", {"gateway": "rw", "registry": "a"}),
        # Gateways write too: a task's arguments too large for its work message are kept there.
        obj(
            s.task_results_store,
            "task results (and large task arguments)",
            {"registry": "rwa", "worker": "rw", "gateway": "rw", "operator": "r"},
        ),
        # Claim checks (bus.payloads): gateways put arguments and read results, workers the reverse,
        # the registry answers large task requests, plain NATS callers (operator) do either.
        obj(
            s.payloads_store,
            "bodies larger than one message",
            {"registry": "rwa", "worker": "rw", "gateway": "rw", "operator": "rw"},
        ),
        obj(s.artifacts_store, "Wasm artifacts", {"registry": "rwa", "worker": "r", "operator": "rw"}),
        StoreRow(
            "stream " + s.tasks_stream,
            s.tasks_stream,
            (s.task_work_any,),
            "the task work queue",
            # The operator may look (a work queue refuses a second consumer of the same tasks).
            {"registry": "rwa", "worker": "r", "gateway": "w", "operator": "r"},
        ),
        StoreRow(
            "stream " + s.audit_stream,
            s.audit_stream,
            (s.audit_any,),
            "the audit trail (it also captures registry events and task statuses)",
            {"registry": "a", "gateway": "w", "operator": "r"},
        ),
    ]


def stream_api(row: StoreRow, role: str) -> list[str]:
    """The JetStream API (and ack / flow-control) subjects ``role`` may publish for ``row``."""
    stream = row.stream
    granted: list[str] = []
    if row.access.get(role):
        # Any use looks the stream up first; only the provisioner ("a") may create it.
        granted.append(f"$JS.API.STREAM.INFO.{stream}")
    if row.allows(role, "r"):
        granted += [
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
            f"$JS.API.CONSUMER.NAMES.{stream}",
            f"$JS.API.CONSUMER.LIST.{stream}",
            f"$JS.ACK.{stream}.>",
            f"$JS.FC.{stream}.>",
        ]
    if row.allows(role, "w"):
        granted += list(row.writes)
        if row.object_store:  # nats-py purges an object's old chunks when it replaces or deletes it
            granted.append(f"$JS.API.STREAM.PURGE.{stream}")
    if row.allows(role, "a"):
        granted += [
            f"$JS.API.STREAM.CREATE.{stream}",
            f"$JS.API.STREAM.PURGE.{stream}",
            f"$JS.API.STREAM.MSG.DELETE.{stream}",
        ]
    return granted


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def as_config(self) -> dict[str, object]:
        return {
            "publish": {"allow": list(self.publish)},
            "subscribe": {"allow": list(self.subscribe)},
            # Replies to requests the role received (calls, pings, micro discovery…) go to the
            # requester's inbox, which no allow-list could name in advance.
            "allow_responses": True,
        }


def role_permissions(subjects: Subjects, role: str) -> Permissions:
    """What ``role`` may publish and subscribe to in the deployment of ``subjects``.

    Raises:
        ValueError: ``role`` is not one of ``ROLES``.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    inbox = f"{inbox_prefix(role)}.>"  # a role's connections publish to their own inboxes (bus.connection.caught_up)
    # Account info and stream names reveal no data; nats-py asks for them to find a stream.
    publish = [inbox, "$JS.API.INFO", "$JS.API.STREAM.NAMES"]
    subscribe = [inbox]
    if role == "operator":
        # The default prefix of the `nats` CLI and of plain nats-py clients, so tools work without
        # an --inbox-prefix: every other role replies under its own prefix, so none is exposed.
        publish.append(f"{DEFAULT_INBOX}.>")
        subscribe.append(f"{DEFAULT_INBOX}.>")
    for row in core_rows(subjects):
        if row.allows(role, "p"):
            publish.append(row.subject)
        if row.allows(role, "s"):
            subscribe.append(row.subject)
    for store in store_rows(subjects):
        publish += stream_api(store, role)
    return Permissions(tuple(dict.fromkeys(publish)), tuple(dict.fromkeys(subscribe)))


_CORE_ACTS: Final = {"p": "publish", "s": "subscribe"}
_STORE_ACTS: Final = {"r": "read", "w": "write", "a": "admin"}


def _cell(access: str, names: dict[str, str]) -> str:
    return ", ".join(name for letter, name in names.items() if letter in access) or "—"


def markdown_table(subjects: Subjects) -> str:
    """Both tables as Markdown: what docs/security.md shows (``toolbus nats-config --table``)."""
    header = "| " + " | ".join(["subject / stream", "what", *ROLES]) + " |"
    rule = "|" + "---|" * (2 + len(ROLES))
    lines = [header, rule]
    for row in core_rows(subjects):
        cells = [f"`{row.subject}`", row.what, *(_cell(row.access.get(r, ""), _CORE_ACTS) for r in ROLES)]
        lines.append("| " + " | ".join(cells) + " |")
    for store in store_rows(subjects):
        cells = [store.label, store.what, *(_cell(store.access.get(r, ""), _STORE_ACTS) for r in ROLES)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
