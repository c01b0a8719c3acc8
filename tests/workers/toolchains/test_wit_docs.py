"""WIT doc comments: the custom section, schema annotation, and tool descriptions at load."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from structlog.testing import capture_logs

from schemas.config import ComponentSettings, ToolOverride
from schemas.wire import ToolDescriptor
from workers.sandbox.component import LoadedComponent
from workers.sandbox.engine import EngineHost
from workers.toolchains.wit_docs import (
    DOCS_SECTION,
    FunctionDocs,
    annotate_schema,
    docs_section,
    function_docs,
    read_docs,
)
from workers.wasm_sections import custom_section

# The schema shapes below are those schemas.wit_schema produces for each WIT type.
S32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
STRING = {"type": "string"}
NULL = {"type": "null"}


def record(**fields: Any) -> dict[str, Any]:
    return {"type": "object", "properties": fields, "required": list(fields), "additionalProperties": False}


def case(name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    if payload is None:
        return {"type": "object", "properties": {"tag": {"const": name}}, "required": ["tag"]}
    return {"type": "object", "properties": {"tag": {"const": name}, "value": payload}, "required": ["tag", "value"]}


def side(key: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: payload}, "required": [key], "additionalProperties": False}


# --- annotate_schema: pure ----------------------------------------------------------------


def test_record_fields_get_descriptions_at_every_depth() -> None:
    schema = record(
        name=STRING,
        price={"anyOf": [{"type": "number"}, NULL]},
        owner=record(email=STRING),
        lines={"type": "array", "items": record(sku=STRING)},
    )
    original = copy.deepcopy(schema)
    tree = {
        "docs": "One line of the catalogue.",
        "fields": {
            "name": {"docs": "Display name."},
            "price": {"docs": "Unit price.", "payload": {"docs": "In euros."}},
            "owner": {"fields": {"email": {"docs": "Where to write."}}},
            "lines": {"element": {"fields": {"sku": {"docs": "Stock unit."}}}},
            "no-such-field": {"docs": "ignored"},
        },
    }

    annotated = annotate_schema(schema, tree)

    assert annotated["description"] == "One line of the catalogue."
    props = annotated["properties"]
    assert props["name"] == {"description": "Display name.", "type": "string"}
    assert props["price"] == {
        "description": "Unit price.",
        "anyOf": [{"description": "In euros.", "type": "number"}, NULL],
    }
    assert props["owner"]["properties"]["email"]["description"] == "Where to write."
    assert "description" not in props["owner"]
    assert props["lines"]["items"]["properties"]["sku"]["description"] == "Stock unit."
    assert set(props) == set(original["properties"])
    assert annotated["required"] == original["required"]
    assert schema == original  # the input is never modified


def test_enum_and_flag_values_are_listed_in_the_description() -> None:
    enum = {"type": "string", "enum": ["tool", "part", "material"]}
    tree = {
        "docs": "The kind of item.",
        "cases": {"tool": {"docs": "A hand or power\ntool."}, "material": {"docs": "Sold by weight."}},
    }
    assert annotate_schema(enum, tree)["description"] == (
        "The kind of item.\n\n- tool: A hand or power tool.\n- material: Sold by weight."
    )
    # Without docs of its own, only the listing.
    assert annotate_schema(enum, {"cases": tree["cases"]})["description"] == (
        "- tool: A hand or power tool.\n- material: Sold by weight."
    )

    flags = {"type": "array", "items": {"type": "string", "enum": ["read", "write"]}, "uniqueItems": True}
    annotated = annotate_schema(flags, {"flags": {"write": {"docs": "May modify."}}})
    assert annotated == {**flags, "description": "- write: May modify."}


def test_variant_cases_describe_their_one_of_entries_and_payloads() -> None:
    schema = {"oneOf": [case("none"), case("by-name", STRING), case("by-owner", record(email=STRING))]}
    tree = {
        "docs": "How to look an item up.",
        "cases": {
            "none": {"docs": "Everything."},
            "by-owner": {"docs": "Items of one owner.", "fields": {"email": {"docs": "The owner's address."}}},
        },
    }

    annotated = annotate_schema(schema, tree)

    assert annotated["description"] == "How to look an item up."
    none, by_name, by_owner = annotated["oneOf"]
    assert none == {"description": "Everything.", **case("none")}
    assert by_name == case("by-name", STRING)
    assert by_owner["description"] == "Items of one owner."
    value = by_owner["properties"]["value"]
    assert "description" not in value  # the case's docs are on the entry, not repeated on the payload
    assert value["properties"]["email"]["description"] == "The owner's address."


def test_results_and_tuples_inside_values() -> None:
    result = {"oneOf": [side("ok", record(id=S32)), side("err", STRING)]}
    tree = {"ok": {"fields": {"id": {"docs": "New id."}}}, "err": {"docs": "Why not."}}
    ok, err = annotate_schema(result, tree)["oneOf"]
    assert ok["properties"]["ok"]["properties"]["id"]["description"] == "New id."
    assert err["properties"]["err"] == {"description": "Why not.", "type": "string"}

    pair = {"type": "array", "prefixItems": [STRING, S32], "minItems": 2, "maxItems": 2, "items": False}
    annotated = annotate_schema(pair, {"items": [None, {"docs": "Count."}]})
    assert annotated["prefixItems"] == [STRING, {"description": "Count.", **S32}]
    assert annotated["items"] is False


@pytest.mark.parametrize("tree", [None, {}, {"fields": {}}, {"cases": "not a mapping"}, {"element": None}])
def test_no_docs_leave_the_schema_as_it_is(tree: Any) -> None:
    schema = record(tags={"type": "array", "items": STRING})
    assert annotate_schema(schema, tree) == schema


def test_a_tree_that_does_not_fit_the_schema_is_ignored() -> None:
    # A damaged or stale section must never break a schema: mismatched parts are skipped.
    assert annotate_schema(S32, {"fields": {"a": {"docs": "x"}}, "element": {"docs": "y"}}) == S32
    assert annotate_schema(STRING, {"cases": {"a": {"docs": "x"}}, "payload": {"docs": "y"}}) == STRING


def test_function_docs_lookup_and_the_output_of_a_top_level_result() -> None:
    docs = {
        "funcs": {"divide": {"docs": "Divide.", "result": {"ok": {"docs": "The quotient."}, "err": {"docs": "x"}}}},
        "interfaces": {"my:pkg/ops@1.0.0": {"funcs": {"neg": {"docs": "Negate.", "params": {"x": {"docs": "In."}}}}}},
    }
    divide = function_docs(docs, "divide")
    assert divide.description == "Divide."
    # A top-level result<T, E> outputs T alone, so T's docs describe the output.
    assert divide.annotate_result({"type": "number"}, returns_result=True) == {
        "description": "The quotient.",
        "type": "number",
    }
    assert divide.annotate_result(None, returns_result=True) is None

    neg = function_docs(docs, "neg", interface="my:pkg/ops@1.0.0")
    assert neg.description == "Negate."
    assert neg.annotate_params(record(x=S32))["properties"]["x"]["description"] == "In."

    assert function_docs(docs, "neg") == FunctionDocs()
    assert function_docs({}, "add") == FunctionDocs()
    assert function_docs({"funcs": {"add": "junk"}, "interfaces": []}, "add", interface="x") == FunctionDocs()


# --- the custom section -----------------------------------------------------------------------

EMPTY_COMPONENT = b"\0asm\x0d\x00\x01\x00"


@pytest.fixture(params=["bytes", "file"])
def read_docs_of(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[bytes], dict[str, Any]]:
    """``read_docs`` of a binary in memory, or of its file (read by seeking: a restart's way)."""
    if request.param == "bytes":
        return read_docs

    def of_file(wasm: bytes) -> dict[str, Any]:
        path = tmp_path / "component.wasm"
        path.write_bytes(wasm)
        with path.open("rb") as file:
            return read_docs(file)

    return of_file


def test_section_round_trip(read_docs_of: Callable[[bytes], dict[str, Any]]) -> None:
    # Long enough that both sizes need a multi-byte LEB128.
    docs = {"world": "w" * 300, "funcs": {"add": {"docs": "Add."}}, "interfaces": {}}
    section = docs_section(docs)
    assert section[0] == 0 and section[1] & 0x80
    assert read_docs_of(EMPTY_COMPONENT + section) == docs
    # Other custom sections are skipped, also one whose name starts as ours does.
    other = b"\x00\x06\x05other"
    longer = custom_section(DOCS_SECTION + "-not", b"{}")
    assert read_docs_of(EMPTY_COMPONENT + other + longer + section) == docs


def test_read_docs_without_the_section_or_on_garbage(read_docs_of: Callable[[bytes], dict[str, Any]]) -> None:
    assert read_docs_of(EMPTY_COMPONENT) == {}
    with pytest.raises(ValueError, match="not a Wasm binary"):
        read_docs_of(b"hello")
    with pytest.raises(ValueError, match="past the end"):
        read_docs_of(EMPTY_COMPONENT + b"\x00\x7f")
    with pytest.raises(ValueError, match="section header at byte 8"):
        read_docs_of(EMPTY_COMPONENT + b"\x00\xff\xff")  # its size's LEB128 never ends
    with pytest.raises(ValueError, match="runs past its section"):
        read_docs_of(EMPTY_COMPONENT + b"\x00\x02\x09ab")  # a name longer than its section


# --- tool descriptions at load ----------------------------------------------------------------

OPS_WAT = r"""
(component
  (core module $m
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
    (func (export "neg") (param i32) (result i32) (i32.sub (i32.const 0) (local.get 0))))
  (core instance $i (instantiate $m))
  (func (export "add") (param "a" s32) (param "b" s32) (result s32) (canon lift (core func $i "add")))
  (func (export "plain") (param "a" s32) (param "b" s32) (result s32) (canon lift (core func $i "add")))
  (func $neg (param "x" s32) (result s32) (canon lift (core func $i "neg")))
  (instance $ops (export "neg" (func $neg)))
  (export "my:pkg/ops@1.0.0" (instance $ops))
)
"""

OPS_DOCS = {
    "world": "Small arithmetic.",
    "funcs": {"add": {"docs": "Add a and b.", "params": {"a": {"docs": "The first term."}}}},
    "interfaces": {"my:pkg/ops@1.0.0": {"docs": "Unary operations.", "funcs": {"neg": {"docs": "Negate x."}}}},
}


def load_tools(engine_host: EngineHost, wasm_path: Path, cache_dir: Path, **settings: Any) -> dict[str, ToolDescriptor]:
    component = ComponentSettings(name=settings.pop("name", "ops"), path=wasm_path, **settings)
    loaded = LoadedComponent.load(engine_host, component, wasm_path, cache_dir)
    return {tool.name: tool for tool in loaded.tools}


def write_ops(tmp_path: Path, section: bytes) -> Path:
    path = tmp_path / "ops.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(OPS_WAT)) + section)
    return path


def test_description_precedence(engine_host: EngineHost, tmp_path: Path) -> None:
    wasm = write_ops(tmp_path, docs_section(OPS_DOCS))
    cache = tmp_path / "cache"

    tools = load_tools(engine_host, wasm, cache)
    assert tools["ops_add"].description == "Add a and b."
    assert tools["ops_ops_neg"].description == "Negate x."
    assert tools["ops_plain"].description == "Calls plain of component ops"
    assert tools["ops_add"].input_schema["properties"]["a"] == {"description": "The first term.", **S32}
    assert tools["ops_add"].input_schema["properties"]["b"] == S32

    tools = load_tools(
        engine_host,
        wasm,
        cache,
        description="Arithmetic.",
        tools={"add": ToolOverride(description="Sum."), "ops/neg": ToolOverride(description="Minus.")},
    )
    assert tools["ops_add"].description == "Sum."  # a config override beats the WIT
    assert tools["ops_ops_neg"].description == "Minus."
    assert tools["ops_plain"].description == "Arithmetic."  # the component's own, for undocumented ones


@pytest.mark.parametrize(
    "section",
    [b"", bytes([0, 15, 12]) + DOCS_SECTION.encode() + b"{]"],  # 15 = name length byte + name + "{]"
    ids=["no section", "damaged section"],
)
def test_components_without_usable_docs_load_as_before(engine_host: EngineHost, tmp_path: Path, section: bytes) -> None:
    wasm = write_ops(tmp_path, section)
    with capture_logs() as logs:
        tools = load_tools(engine_host, wasm, tmp_path / "cache", description="Arithmetic.")
    assert {t.description for t in tools.values()} == {"Arithmetic."}
    assert tools["ops_add"].input_schema == record(a=S32, b=S32)
    warned = [entry for entry in logs if entry["event"] == "docs section unreadable; ignored"]
    assert len(warned) == (1 if section else 0)


@pytest.mark.slow
def test_built_calc_tools_carry_the_wit_docs(engine_host: EngineHost, calc_wasm: Path, cache_dir: Path) -> None:
    tools = load_tools(engine_host, calc_wasm, cache_dir, name="calc")
    assert tools["calc_add"].description == "Add two 32-bit integers and return their sum (wrapping on overflow)."
    assert tools["calc_divide"].description.startswith("Divide `a` by `b`")

    overridden = load_tools(
        engine_host, calc_wasm, cache_dir, name="calc", tools={"add": ToolOverride(description="Adds.")}
    )
    assert overridden["calc_add"].description == "Adds."
    assert overridden["calc_divide"].description == tools["calc_divide"].description


@pytest.mark.slow
def test_built_inventory_schemas_carry_the_wit_docs(
    engine_host: EngineHost, inventory_wasm: Path, cache_dir: Path
) -> None:
    tools = load_tools(engine_host, inventory_wasm, cache_dir, name="inventory")
    quote = tools["inventory_price_quote"]
    assert quote.description.startswith("Quote `quantity` units of `item`")

    item = quote.input_schema["properties"]["item"]
    assert item["description"] == "One line of the catalogue."
    fields = item["properties"]
    assert fields["name"]["description"] == 'Display name, e.g. "M6 hex bolt".'
    assert fields["price"]["description"].startswith("Unit price in euros")
    assert fields["category"]["description"].startswith("The kind of item.\n\n- tool: A hand or power tool")
    assert fields["category"]["enum"] == ["tool", "part", "material"]
    assert "description" not in quote.input_schema["properties"]["quantity"]  # a u32 has no docs

    assert quote.output_schema is not None
    assert quote.output_schema["description"] == "The price of some quantity of an item."
    assert quote.output_schema["properties"]["discounted"]["description"].startswith("True when")

    describe = tools["inventory_catalog_describe"]
    assert describe.description.startswith("Describe an item in one line")
    assert describe.input_schema["properties"]["item"] == item
