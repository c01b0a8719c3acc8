"""WIT doc comments carried inside a component, and their use in tool descriptions and schemas.

Every component builder drops WIT doc comments, so ``workers.toolchains.componentize`` extracts them from the
project's WIT (``extract_docs``) and appends them to the artifact as a custom section named
``toolbus:docs`` (``docs_section``). A loader reads them back with ``read_docs`` and, per
exported function, ``function_docs``. The section holds JSON keyed by export names as a host
sees them, so a reader needs no WIT::

    {"world": doc,
     "funcs": {"add": {"docs": doc, "params": {"a": tree}, "result": tree}},
     "interfaces": {"ns:pkg/iface": {"docs": doc, "funcs": {...}}}}

A ``tree`` mirrors a value's type and holds docs where the WIT has them:
``{"docs", "fields": {name: tree}, "cases": {name: tree}, "flags": {name: tree},
"element", "payload", "ok", "err", "items": [tree]}``. Parts without docs are left out.
A record field's or a case's tree is its type's tree with the member's own doc comment, if any,
as ``docs``. WIT has no doc comments on parameters, so a parameter's tree is its type's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from schemas.wit_schema import JsonSchema
from workers.toolchains.errors import BuildError
from workers.wasm_sections import custom_section, find_custom_section

DOCS_SECTION = "toolbus:docs"
"""Name of the custom section holding the WIT doc comments (JSON)."""

_MAX_DEPTH = 64
"""WIT types cannot recurse; this only bounds the walk over a malformed document."""


@dataclass(frozen=True)
class FunctionDocs:
    """The doc comments of one exported function, ready to decorate its tool."""

    description: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] | None = None

    def annotate_params(self, schema: JsonSchema) -> JsonSchema:
        """The input schema (``schemas.wit_schema.params_schema``) with the parameters' docs."""
        return annotate_schema(schema, {"fields": self.params})

    def annotate_result(self, schema: JsonSchema | None, returns_result: bool) -> JsonSchema | None:
        """The output schema (``schemas.wit_schema.output_schema``) with the result's docs."""
        if schema is None:
            return None
        tree = self.result
        if returns_result and tree is not None:
            # The output of a top-level result<T, E> is T alone (an Err becomes isError).
            tree = _mapping(tree.get("ok"))
        return annotate_schema(schema, tree)


def extract_docs(resolve: Mapping[str, Any], world: str) -> dict[str, Any]:
    """The ``toolbus:docs`` layout of ``world``, from the JSON of ``wasm-tools component wit --json``.

    Raises:
        BuildError: the WIT defines no world named ``world``.
    """
    return _DocsExtractor(resolve).world(world)


def docs_section(docs: Mapping[str, Any]) -> bytes:
    """``docs`` as a ``toolbus:docs`` custom section, to append to a component."""
    return custom_section(DOCS_SECTION, json.dumps(docs, sort_keys=True).encode())


def read_docs(wasm: bytes | BinaryIO) -> dict[str, Any]:
    """The ``toolbus:docs`` section of a component (its bytes, or its file open in binary mode)
    as a dict, or ``{}`` when it has none.

    Raises:
        ValueError: ``wasm`` is not a well-formed Wasm binary.
        OSError: the file cannot be read.
    """
    payload = find_custom_section(memoryview(wasm) if isinstance(wasm, bytes) else wasm, DOCS_SECTION)
    if payload is None:
        return {}
    docs = json.loads(payload)
    if not isinstance(docs, dict):
        raise ValueError(f"{DOCS_SECTION} section does not hold a JSON object")
    return docs


def function_docs(docs: Mapping[str, Any], name: str, interface: str | None = None) -> FunctionDocs:
    """Docs of the function ``name``, exported at the top level or by ``interface`` (its full name)."""
    # The section is our own output, but a damaged one must cost the docs, never the component.
    scope = _mapping(_mapping(docs.get("interfaces")).get(interface)) if interface else docs
    entry = _mapping(_mapping(scope.get("funcs")).get(name))
    result = entry.get("result")
    return FunctionDocs(
        description=_text(entry.get("docs")),
        params=_mapping(entry.get("params")),
        result=result if isinstance(result, Mapping) else None,
    )


def annotate_schema(schema: JsonSchema, tree: Mapping[str, Any] | None) -> JsonSchema:
    """A copy of ``schema`` (from ``schemas.wit_schema``) with the docs of ``tree`` as ``description``s.

    Docs go where JSON Schema can hold them: on the schema itself, on record fields, on variant
    cases (their ``oneOf`` entries) and inside lists, options, results and tuples. Enum and flag
    values cannot carry a description each, so their docs are listed in the enclosing one.
    ``schema`` is not modified; without docs it comes back as it is.
    """
    return _annotate(schema, tree, 0)


def _annotate(schema: JsonSchema, tree: Mapping[str, Any] | None, depth: int) -> JsonSchema:
    if not isinstance(tree, Mapping) or not tree or depth > _MAX_DEPTH:
        return schema
    out = dict(schema)
    description = _text(tree.get("docs"))

    def inner(part: Any, part_tree: Any) -> Any:
        return _annotate(part, _mapping(part_tree), depth + 1) if isinstance(part, dict) else part

    if (fields := _mapping(tree.get("fields"))) and isinstance(out.get("properties"), dict):
        out["properties"] = {name: inner(prop, fields.get(name)) for name, prop in out["properties"].items()}
    if cases := _mapping(tree.get("cases")):
        if isinstance(out.get("oneOf"), list):  # a variant: one entry per case
            out["oneOf"] = [_annotate_case(entry, cases, depth + 1) for entry in out["oneOf"]]
        elif isinstance(out.get("enum"), list):
            description = _with_values(description, out["enum"], cases)
    if (flags := _mapping(tree.get("flags"))) and isinstance(items := out.get("items"), dict):
        description = _with_values(description, items.get("enum"), flags)
    if "element" in tree and isinstance(out.get("items"), dict):
        out["items"] = inner(out["items"], tree["element"])
    if "payload" in tree and isinstance(out.get("anyOf"), list):  # option<T>: [T, null]
        out["anyOf"] = [inner(part, tree["payload"] if i == 0 else None) for i, part in enumerate(out["anyOf"])]
    if ("ok" in tree or "err" in tree) and isinstance(out.get("oneOf"), list):
        out["oneOf"] = [_annotate_side(entry, tree, depth + 1) for entry in out["oneOf"]]
    if isinstance(docs := tree.get("items"), list) and isinstance(out.get("prefixItems"), list):
        out["prefixItems"] = [
            inner(part, docs[i] if i < len(docs) else None) for i, part in enumerate(out["prefixItems"])
        ]
    return {"description": description, **out} if description else out


def _annotate_case(entry: Any, cases: Mapping[str, Any], depth: int) -> Any:
    """A variant's ``oneOf`` entry: the case's docs on the entry, its payload's inside ``value``."""
    properties = entry.get("properties") if isinstance(entry, dict) else None
    if not isinstance(properties, dict) or not isinstance(properties.get("tag"), dict):
        return entry
    case = _mapping(cases.get(properties["tag"].get("const")))
    if not case:
        return entry
    out = dict(entry)
    if isinstance(properties.get("value"), dict):
        payload = {k: v for k, v in case.items() if k != "docs"}
        out["properties"] = {**properties, "value": _annotate(properties["value"], payload, depth)}
    description = _text(case.get("docs"))
    return {"description": description, **out} if description else out


def _annotate_side(entry: Any, tree: Mapping[str, Any], depth: int) -> Any:
    """A nested ``result``'s ``oneOf`` entry (``{"ok": T}`` or ``{"err": E}``) with that side's docs."""
    properties = entry.get("properties") if isinstance(entry, dict) else None
    if not isinstance(properties, dict):
        return entry
    for side in ("ok", "err"):
        if isinstance(properties.get(side), dict) and (side_tree := _mapping(tree.get(side))):
            return {**entry, "properties": {**properties, side: _annotate(properties[side], side_tree, depth)}}
    return entry


def _with_values(description: str | None, names: Any, members: Mapping[str, Any]) -> str | None:
    """``description`` followed by a ``- name: doc`` line per documented enum or flag value."""
    if not isinstance(names, list):
        return description
    lines = [
        f"- {name}: {' '.join(doc.split())}"
        for name in names
        if isinstance(name, str) and (doc := _text(_mapping(members.get(name)).get("docs")))
    ]
    if not lines:
        return description
    return "\n\n".join([*([description] if description else []), "\n".join(lines)])


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class _DocsExtractor:
    """Turns the JSON of ``wasm-tools component wit --json`` into the ``toolbus:docs`` layout."""

    def __init__(self, resolve: Mapping[str, Any]) -> None:
        self._resolve = resolve

    def world(self, name: str) -> dict[str, Any]:
        """Docs of world ``name`` (a plain name, or ``ns:pkg/name``) and of what it exports."""
        world = self._find_world(name)
        funcs: dict[str, Any] = {}
        interfaces: dict[str, Any] = {}
        for export_name, item in world["exports"].items():
            if "function" in item:
                funcs[export_name] = self._function(item["function"])
            elif "interface" in item:
                iface = self._resolve["interfaces"][item["interface"]["id"]]
                key = self._interface_name(iface) or export_name
                interfaces[key] = {
                    "docs": _doc(iface),
                    "funcs": {n: self._function(f) for n, f in iface["functions"].items()},
                }
        return {"world": _doc(world), "funcs": funcs, "interfaces": interfaces}

    def _find_world(self, name: str) -> dict[str, Any]:
        short = name.rpartition("/")[2].partition("@")[0]
        # Packages come dependencies first, so the project's own world is the last match.
        for world in reversed(self._resolve["worlds"]):
            if world["name"] == short:
                return dict(world)
        raise BuildError(f"world {name!r} is not defined in the WIT")

    def _interface_name(self, iface: dict[str, Any]) -> str | None:
        """``ns:pkg/iface@version``, the name under which the component exports the interface."""
        if iface.get("name") is None or iface.get("package") is None:
            return None  # an inline interface is exported under its world-level name
        package, _, version = self._resolve["packages"][iface["package"]]["name"].partition("@")
        return f"{package}/{iface['name']}" + (f"@{version}" if version else "")

    def _function(self, func: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"docs": _doc(func)}
        params = {p["name"]: tree for p in func["params"] if (tree := self._tree(p["type"])) is not None}
        if params:
            entry["params"] = params
        if (result := self._tree(func.get("result"))) is not None:
            entry["result"] = result
        return entry

    def _tree(self, ref: Any, depth: int = 0) -> dict[str, Any] | None:
        """Docs of the type ``ref`` points to (a type index; primitives are strings and have none)."""
        if not isinstance(ref, int) or depth > _MAX_DEPTH:
            return None
        typedef = self._resolve["types"][ref]
        kind = typedef["kind"]
        node: dict[str, Any] = {}
        if isinstance(kind, dict):
            if "type" in kind:  # an alias (`use`, `type x = y`): the target's docs unless it has its own
                node = self._tree(kind["type"], depth + 1) or {}
            elif "record" in kind:
                node["fields"] = self._members(kind["record"]["fields"], depth)
            elif "variant" in kind:
                node["cases"] = self._members(kind["variant"]["cases"], depth)
            elif "enum" in kind:
                node["cases"] = self._members(kind["enum"]["cases"], depth)
            elif "flags" in kind:
                node["flags"] = self._members(kind["flags"]["flags"], depth)
            elif "list" in kind:
                node["element"] = self._tree(kind["list"], depth + 1)
            elif "option" in kind:
                node["payload"] = self._tree(kind["option"], depth + 1)
            elif "result" in kind:
                node["ok"] = self._tree(kind["result"].get("ok"), depth + 1)
                node["err"] = self._tree(kind["result"].get("err"), depth + 1)
            elif "tuple" in kind:
                items = [self._tree(t, depth + 1) for t in kind["tuple"]["types"]]
                node["items"] = items if any(items) else None
        if (doc := _doc(typedef)) is not None:
            node["docs"] = doc
        node = {k: v for k, v in node.items() if v}
        return node or None

    def _members(self, members: list[dict[str, Any]], depth: int) -> dict[str, Any]:
        """Docs of record fields, variant/enum cases or flags, by name."""
        out: dict[str, Any] = {}
        for member in members:
            tree = self._tree(member.get("type"), depth + 1) or {}
            if (doc := _doc(member)) is not None:
                tree = {**tree, "docs": doc}
            if tree:
                out[member["name"]] = tree
        return out


def _doc(item: Mapping[str, Any]) -> str | None:
    contents = (item.get("docs") or {}).get("contents")
    return contents if isinstance(contents, str) and contents else None
