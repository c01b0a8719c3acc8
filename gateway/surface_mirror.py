"""The gateway's mirror of resources, resource templates and prompts: the surfaces bucket
(``Subjects.surfaces_bucket``, one ``ComponentSurface`` per component), watched like the tools
bucket (``gateway.catalogue_mirror.CatalogueMirrorWatcher``) and indexed for the requests:

- resources by URI, templates by URI template, prompts by name, each sorted, so lists page with
  the tools' cursor scheme (``encode_cursor``: "after this key");
- who serves a URI: the component listing it as a fixed resource, else the first template that
  matches it (RFC 6570 level 1: a ``{var}`` matches one or more characters other than ``/``;
  ``template_matches``, in linear time).

URIs are global. When two components list the same fixed URI (or the same URI template), the
component whose name sorts first serves it and the other's entry is not listed (a warning is
logged each time the surfaces change). Prompt names carry their component's tool prefix, but
prefixes can still collide (component ``a`` with prompt ``b_x``, or with ``prefix = ""``, beside
component ``b`` with prompt ``x``): then too the first component by name serves it, and policy,
which judges a prompt by name as it judges a tool, grants it as ``b_*`` — as for two tools of one
name on different workers. Independent of the mcp SDK.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from gateway.catalogue_mirror import decode_key_cursor, encode_cursor
from gateway.errors import InvalidCursor
from schemas.codec import DecodeError, decode
from schemas.wire import ComponentSurface, PromptDescriptor, ResourceDescriptor, ResourceTemplateDescriptor

log = structlog.get_logger(__name__)

Item = TypeVar("Item")
SurfaceListener = Callable[[frozenset[str]], None]
"""Told which lists changed (``resources``, ``prompts``) after each change; must not block."""
RESOURCES = "resources"
PROMPTS = "prompts"


@dataclass(frozen=True, slots=True)
class Served(Generic[Item]):
    """One listed item and the component that serves it."""

    key: str
    component: str
    item: Item


@dataclass(frozen=True, slots=True)
class SurfacePage(Generic[Item]):
    entries: list[Served[Item]]
    next_cursor: str | None


_VARIABLE = re.compile(r"(\{[^{}]*\})")


def template_segments(uri_template: str) -> list[list[str]]:
    """An RFC 6570 level-1 template as its ``/``-separated segments, each the literal text around
    its variables (``"a{x}b{y}"`` → ``["a", "b", ""]``; no variable: one literal)."""
    segments: list[list[str]] = []
    current = [""]
    for i, token in enumerate(_VARIABLE.split(uri_template)):
        if i % 2:  # a variable: the literal after it starts
            current.append("")
            continue
        first, *rest = token.split("/")
        current[-1] += first
        for piece in rest:
            segments.append(current)
            current = [piece]
    segments.append(current)
    return segments


def template_matches(uri_template: str | list[list[str]], uri: str) -> bool:
    """Whether ``uri`` is one the template stands for: each ``{var}`` one or more characters
    other than ``/``.

    Not a regex: adjacent variables (``{a}{b}``), or variables around a separator they may also
    match (``{a}-{b}-{c}``), make a backtracking match take time exponential in their number on
    a URI that almost matches, and a component chooses its templates while any client chooses
    the URI. A variable never holds a ``/``, so segments pair up; within one, each literal is
    taken at its leftmost place (which leaves the most room for the rest): linear time.
    """
    segments = template_segments(uri_template) if isinstance(uri_template, str) else uri_template
    parts = uri.split("/")
    return len(parts) == len(segments) and all(map(_segment_matches, segments, parts))


def _segment_matches(literals: list[str], text: str) -> bool:
    if len(literals) == 1:
        return text == literals[0]
    first, last = literals[0], literals[-1]
    end = len(text) - len(last)
    if not (text.startswith(first) and text.endswith(last)):
        return False
    at = len(first)
    for literal in literals[1:-1]:
        found = text.find(literal, at + 1, end)  # the variable before it takes at least one character
        if found < 0:
            return False
        at = found + len(literal)
    return at + 1 <= end  # and so does the last variable


class _Index(Generic[Item]):
    """Items sorted by key; the first component (by name) to list a key serves it."""

    def __init__(self, served: Iterable[Served[Item]], kind: str) -> None:
        self.by_key: dict[str, Served[Item]] = {}
        for entry in sorted(served, key=lambda e: (e.key, e.component)):
            first = self.by_key.setdefault(entry.key, entry)
            if first is not entry:
                log.warning(
                    f"{kind} claimed twice; the first component serves it",
                    key=entry.key,
                    serving=first.component,
                    ignored=entry.component,
                )
        self.keys = sorted(self.by_key)

    def page(self, cursor: str | None, size: int, allows: Callable[[Served[Item]], bool] | None) -> SurfacePage[Item]:
        start = 0
        if cursor is not None:
            after = decode_key_cursor(cursor)
            if not after:
                raise InvalidCursor(f"invalid cursor {cursor[:64]!r}: pass a nextCursor from an earlier list")
            start = bisect.bisect_right(self.keys, after)
        candidates = (self.by_key[k] for k in itertools.islice(self.keys, start, None))
        chosen = list(itertools.islice((e for e in candidates if allows is None or allows(e)), size + 1))
        more = len(chosen) > size
        del chosen[size:]
        return SurfacePage(chosen, encode_cursor(chosen[-1].key) if more and chosen else None)


class SurfaceMirror:
    """Surfaces by component, indexed; fed by a ``CatalogueMirrorWatcher`` (or directly in tests)."""

    def __init__(self) -> None:
        self._surfaces: dict[str, ComponentSurface] = {}
        self._listeners: list[SurfaceListener] = []
        self.loaded = asyncio.Event()
        self._index()

    def __len__(self) -> int:
        return len(self._surfaces)

    def surface(self, component: str) -> ComponentSurface | None:
        return self._surfaces.get(component)

    # -- what the watcher calls -------------------------------------------------------------------
    def replace(self, surfaces: Iterable[ComponentSurface]) -> None:
        self._changed({s.component: s for s in surfaces})

    def put(self, surface: ComponentSurface) -> None:
        self._changed({**self._surfaces, surface.component: surface})

    def remove(self, component: str) -> None:
        if component in self._surfaces:
            self._changed({k: v for k, v in self._surfaces.items() if k != component})

    def subscribe(self, listener: SurfaceListener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns a function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self, surfaces: dict[str, ComponentSurface]) -> None:
        before = self._surfaces
        self._surfaces = surfaces
        self._index()
        changed = set()
        for name in before.keys() | surfaces.keys():
            old, new = before.get(name), surfaces.get(name)
            old_listing = (old.resources, old.templates) if old else ([], [])
            new_listing = (new.resources, new.templates) if new else ([], [])
            if old_listing != new_listing:
                changed.add(RESOURCES)
            if (old.prompts if old else []) != (new.prompts if new else []):
                changed.add(PROMPTS)
        if changed:
            for listener in list(self._listeners):
                try:
                    listener(frozenset(changed))
                except Exception:
                    log.exception("surface listener failed")

    def _index(self) -> None:
        surfaces = self._surfaces.values()
        self.resources = _Index((Served(r.uri, s.component, r) for s in surfaces for r in s.resources), "resource URI")
        self.templates: _Index[ResourceTemplateDescriptor] = _Index(
            (Served(t.uri_template, s.component, t) for s in surfaces for t in s.templates), "resource template"
        )
        self.prompts: _Index[PromptDescriptor] = _Index(
            (Served(p.name, s.component, p) for s in surfaces for p in s.prompts), "prompt name"
        )
        self._patterns = [(template_segments(e.key), e.component) for e in self.templates.by_key.values()]

    # -- lookups ---------------------------------------------------------------------------------
    def resource_owner(self, uri: str) -> str | None:
        """The component that serves ``uri``: a fixed resource's, else the first matching template's."""
        fixed: Served[ResourceDescriptor] | None = self.resources.by_key.get(uri)
        if fixed is not None:
            return fixed.component
        return next((component for segments, component in self._patterns if template_matches(segments, uri)), None)

    def template_owner(self, uri_template: str) -> str | None:
        entry = self.templates.by_key.get(uri_template)
        return entry.component if entry else None

    def prompt(self, name: str) -> Served[PromptDescriptor] | None:
        return self.prompts.by_key.get(name)


def decode_surface(key: str, value: bytes) -> ComponentSurface | None:
    """A surfaces-bucket value, or None (logged) when it cannot be served."""
    try:
        surface = decode(value, ComponentSurface)
    except DecodeError as exc:
        log.warning("undecodable surface in the surfaces bucket", key=key, error=str(exc))
        return None
    if surface.component != key:
        log.warning("surface stored under another component's name", key=key, component=surface.component)
        return None
    return surface
