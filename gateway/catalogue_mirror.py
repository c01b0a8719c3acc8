"""The gateway's mirror of the tool catalogue: an in-memory copy of the tools KV bucket, kept
current by a watch on it. The registry holds the authoritative catalogue (``registry.catalogue``,
with worker liveness); this copy only reads, hence its name.

No registry round trip per request: ``tools/list`` and argument validation read this. Entries
are kept sorted by name so pagination is stable, and each carries what serving its tool needs,
made once when the entry is: the compiled argument validator and the ``Tool`` JSON of each
protocol era. Independent of the mcp SDK.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

import jsonschema
import structlog
from nats.js.kv import KeyValue

from bus.cancellation import cancel_and_wait
from bus.errors import BusError, nats_boundary
from bus.subjects import is_valid_tool_name
from gateway.errors import InvalidCursor
from schemas.codec import DecodeError, decode
from schemas.validation import ArgumentValidator, compile_validator
from schemas.wire import JsonSchema, TaskSupport, ToolDescriptor

log = structlog.get_logger(__name__)

WATCH_RETRY_S: Final = 1.0
"""Pause before re-opening a KV watch that failed (JetStream still starting, connection lost)."""

_CURSOR_PREFIX: Final = b"after:"
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One tool, with what serving it takes, made once by ``entry_for``."""

    descriptor: ToolDescriptor
    validator: ArgumentValidator
    legacy_tool: dict[str, Any]
    """The MCP ``Tool`` a 2025-era client sees (``tool_json(modern=False)``); never mutated."""
    modern_tool: dict[str, Any]
    """The MCP ``Tool`` a 2026-07-28 client sees (``tool_json(modern=True)``); never mutated."""
    sdk_tools: dict[bool, Any] = field(default_factory=dict, compare=False, repr=False)
    """The SDK front end's validated ``Tool`` model by era (``modern``), made there on first use."""

    @property
    def name(self) -> str:
        return self.descriptor.name


@dataclass(frozen=True, slots=True)
class CatalogueChange:
    """What one update did to the catalogue (names, sorted)."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)


@dataclass(frozen=True, slots=True)
class CataloguePage:
    """One page of ``tools/list``; ``next_cursor`` is None on the last page."""

    entries: list[CatalogueEntry]
    next_cursor: str | None


ChangeListener = Callable[[CatalogueChange], None]
"""Called after each change that altered the catalogue; must not block."""


def encode_cursor(last_name: str) -> str:
    """An opaque cursor meaning "the tools after ``last_name``" (stable when others come or go)."""
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + last_name.encode()).rstrip(b"=").decode()


def decode_key_cursor(cursor: str) -> str:
    """The key (a tool name, a resource URI…) a cursor of ``encode_cursor`` points after; ``""``
    when it is no such cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return raw.removeprefix(_CURSOR_PREFIX).decode() if raw.startswith(_CURSOR_PREFIX) else ""
    except (binascii.Error, ValueError):
        return ""


def decode_cursor(cursor: str) -> str:
    """The tool name a cursor points after.

    Raises:
        InvalidCursor: the cursor was not made by ``encode_cursor``.
    """
    name = decode_key_cursor(cursor)
    if not is_valid_tool_name(name):
        raise InvalidCursor(f"invalid cursor {cursor[:64]!r}: pass a nextCursor from an earlier tools/list")
    return name


def descriptor_problem(descriptor: ToolDescriptor) -> str | None:
    """Why a descriptor cannot be served, or None; a bad one would break every ``tools/list``."""
    if not is_valid_tool_name(descriptor.name):
        return f"tool name {descriptor.name!r} is not a valid subject token"
    if descriptor.input_schema.get("type") != "object":
        return "inputSchema must have type 'object' at the root"
    if descriptor.output_schema is not None and not isinstance(descriptor.output_schema, dict):
        return "outputSchema must be a JSON object"
    try:
        jsonschema.Draft202012Validator.check_schema(descriptor.input_schema)
    except jsonschema.SchemaError as exc:
        return f"inputSchema is not a valid JSON Schema: {exc.message}"
    return None


def tool_json(descriptor: ToolDescriptor, *, modern: bool) -> dict[str, Any]:
    """The MCP ``Tool`` object of a descriptor, as a client of the given era may see it."""
    tool: dict[str, Any] = {"name": descriptor.name, "inputSchema": descriptor.input_schema}
    if descriptor.description:
        tool["description"] = descriptor.description
    output_schema = descriptor.output_schema
    # 2025-era clients reject the whole tools/list over one non-object outputSchema.
    if output_schema is not None and (modern or output_schema.get("type") == "object"):
        tool["outputSchema"] = output_schema
    if not modern:
        # 2025-11-25 says per tool whether it may run as a task; 2026-07-28's Tool has no such field
        # (the tasks extension lets the server decide per call; gateway.task_frontend.task_route).
        tool["execution"] = {"taskSupport": descriptor.task_support}
    return tool


def entry_for(descriptor: ToolDescriptor) -> CatalogueEntry:
    """A catalogue entry: the validator compiled (cached by schema content), the ``Tool`` JSON of both eras."""
    return CatalogueEntry(
        descriptor,
        compile_validator(descriptor.input_schema),
        legacy_tool=tool_json(descriptor, modern=False),
        modern_tool=tool_json(descriptor, modern=True),
    )


class CatalogueMirror:
    """Tools by name, sorted; fed by ``CatalogueMirrorWatcher`` (or directly, e.g. in tests)."""

    def __init__(self) -> None:
        self._entries: dict[str, CatalogueEntry] = {}
        self._names: list[str] = []
        self._listeners: list[ChangeListener] = []
        self.loaded = asyncio.Event()
        """Set once the bucket's initial values are in."""

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Every tool name, sorted."""
        return list(self._names)

    def get(self, name: str) -> CatalogueEntry | None:
        """The entry of ``name``, or None."""
        return self._entries.get(name)

    def input_schema(self, name: str) -> JsonSchema | None:
        """The input schema of ``name``, or None when there is no such tool."""
        entry = self._entries.get(name)
        return entry.descriptor.input_schema if entry else None

    def task_support(self, name: str) -> TaskSupport | None:
        """The task support of ``name``, or None when there is no such tool."""
        entry = self._entries.get(name)
        return entry.descriptor.task_support if entry else None

    def sdk_only(self, name: str) -> bool:
        """Whether calls of ``name`` need the SDK path, so the hot path never serves them: a tool
        that runs only as a task (``task_frontend.task_route``), needs client capabilities
        (``server.ToolFrontend``), or whose guest may ask the client (``ToolDescriptor.asks``:
        only the SDK relays the questions, ``gateway.askers``)."""
        entry = self._entries.get(name)
        if entry is None:
            return False
        tool = entry.descriptor
        return tool.task_support == "required" or bool(tool.client_capabilities) or tool.asks

    def page(self, cursor: str | None, size: int, allows: Callable[[str], bool] | None = None) -> CataloguePage:
        """Up to ``size`` entries after ``cursor`` (from the start when None), only those ``allows``
        (when given) says a principal may see.

        Raises:
            InvalidCursor: ``cursor`` was not issued by ``page``.
        """
        start = 0 if cursor is None else bisect.bisect_right(self._names, decode_cursor(cursor))
        if allows is None:
            names = self._names[start : start + size]
            more = start + size < len(self._names)
        else:
            visible = (n for n in itertools.islice(self._names, start, None) if allows(n))
            names = list(itertools.islice(visible, size + 1))
            more = len(names) > size
            del names[size:]
        return CataloguePage([self._entries[n] for n in names], encode_cursor(names[-1]) if more and names else None)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns a function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def put(self, descriptor: ToolDescriptor) -> CatalogueChange:
        """Add or replace one tool; a descriptor that cannot be served removes the name instead.

        An unchanged descriptor keeps its entry (and what was made from it).
        """
        problem = descriptor_problem(descriptor)
        if problem is not None:
            log.warning("tool not served", tool=descriptor.name, problem=problem)
            return self.remove(descriptor.name)
        name = descriptor.name
        old = self._entries.get(name)
        if old is not None and old.descriptor == descriptor:
            return CatalogueChange()
        self._entries[name] = entry_for(descriptor)
        if old is None:
            bisect.insort(self._names, name)
        change = CatalogueChange(added=(name,)) if old is None else CatalogueChange(updated=(name,))
        self._notify(change)
        return change

    def remove(self, name: str) -> CatalogueChange:
        """Remove one tool (no change when it is absent)."""
        if self._entries.pop(name, None) is None:
            return CatalogueChange()
        del self._names[bisect.bisect_left(self._names, name)]
        change = CatalogueChange(removed=(name,))
        self._notify(change)
        return change

    def replace(self, descriptors: Iterable[ToolDescriptor]) -> CatalogueChange:
        """Make the catalogue exactly ``descriptors`` (a fresh snapshot); one change for all of it.

        Unchanged descriptors keep their entries.
        """
        fresh: dict[str, ToolDescriptor] = {}
        for descriptor in descriptors:
            problem = descriptor_problem(descriptor)
            if problem is None:
                fresh[descriptor.name] = descriptor
            else:
                log.warning("tool not served", tool=descriptor.name, problem=problem)
        removed = tuple(sorted(set(self._entries) - set(fresh)))
        added: list[str] = []
        updated: list[str] = []
        for name, descriptor in fresh.items():
            old = self._entries.get(name)
            if old is None:
                added.append(name)
            elif old.descriptor != descriptor:
                updated.append(name)
            else:
                continue
            self._entries[name] = entry_for(descriptor)
        for name in removed:
            del self._entries[name]
        self._names = sorted(self._entries)
        change = CatalogueChange(tuple(sorted(added)), tuple(sorted(updated)), removed)
        self._notify(change)
        return change

    def _notify(self, change: CatalogueChange) -> None:
        if not change:
            return
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("catalogue listener failed")


def _descriptor(key: str, value: bytes) -> ToolDescriptor | None:
    try:
        descriptor = decode(value, ToolDescriptor)
    except DecodeError as exc:
        log.warning("undecodable tool descriptor in the catalogue bucket", key=key, error=str(exc))
        return None
    if descriptor.name != key:
        log.warning("tool descriptor stored under another name", key=key, tool=descriptor.name)
        return None
    return descriptor


class MirrorTarget(Protocol[T_contra]):
    """What a ``CatalogueMirrorWatcher`` keeps current: ``CatalogueMirror`` (tools) or
    ``gateway.surface_mirror.SurfaceMirror`` (resources, prompts)."""

    loaded: asyncio.Event

    def __len__(self) -> int: ...

    def replace(self, values: Iterable[T_contra]) -> Any: ...

    def put(self, value: T_contra) -> Any: ...

    def remove(self, key: str) -> Any: ...


class CatalogueMirrorWatcher(Generic[T]):
    """Keeps a ``CatalogueMirror`` (or any ``MirrorTarget``) in step with its KV bucket until stopped.

    Each (re)opened watch first collects the bucket's current values and swaps them in as one
    snapshot when the initial-values marker arrives, so keys deleted while the watch was down
    disappear too; after that every put, delete and purge is applied as it comes.
    """

    def __init__(
        self,
        kv: KeyValue,
        catalogue: MirrorTarget[T],
        *,
        retry_s: float = WATCH_RETRY_S,
        decode_value: Callable[[str, bytes], T | None] = _descriptor,  # type: ignore[assignment]
    ) -> None:
        self._kv = kv
        self._catalogue = catalogue
        self._decode = decode_value
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    def start(self) -> None:
        """Start watching in a background task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="catalogue-watch")

    async def stop(self) -> None:
        """Stop watching (the catalogue keeps its last state)."""
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait([task])
        await self._close_watch()

    async def _close_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(BusError, asyncio.TimeoutError), nats_boundary:
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        while True:
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("catalogue watch failed; reopening", error=str(exc) or type(exc).__name__)
            await self._close_watch()
            await asyncio.sleep(self._retry_s)

    async def _watch_once(self) -> None:
        self._watcher = watcher = await self._kv.watchall()
        snapshot: dict[str, T] | None = {}
        async for entry in watcher:
            if entry is None:  # the initial values are all in
                if snapshot is not None:
                    self._catalogue.replace(snapshot.values())
                    snapshot = None
                    self._catalogue.loaded.set()
                    log.info("catalogue loaded", tools=len(self._catalogue))
                continue
            key = entry.key
            deleted = entry.operation in ("DEL", "PURGE")
            descriptor = None if deleted else self._decode(key, entry.value or b"")
            if snapshot is not None:
                if descriptor is None:
                    snapshot.pop(key, None)
                else:
                    snapshot[key] = descriptor
            elif descriptor is None:
                self._catalogue.remove(key)
            else:
                self._catalogue.put(descriptor)
