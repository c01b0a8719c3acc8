"""JSON Schema of every WIT value type, read from a real component's type reflection."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import wasmtime
from wasmtime import component as wc

from schemas.errors import WitTypeError
from schemas.wit_schema import output_schema, params_schema, value_schema
from tests.schemas.conftest import Wit
from tests.schemas.wit_zoo import Zoo

INTEGERS = [
    ("s8", -128, 127),
    ("s16", -32768, 32767),
    ("s32", -(2**31), 2**31 - 1),
    ("s64", -(2**63), 2**63 - 1),
    ("u8", 0, 255),
    ("u16", 0, 65535),
    ("u32", 0, 2**32 - 1),
    ("u64", 0, 2**64 - 1),
]


@pytest.mark.parametrize(("name", "low", "high"), INTEGERS)
def test_integers_have_exact_bounds(wit: Wit, name: str, low: int, high: int) -> None:
    assert value_schema(wit(name)) == {"type": "integer", "minimum": low, "maximum": high}


def test_scalars(wit: Wit) -> None:
    assert value_schema(wit("bool")) == {"type": "boolean"}
    assert value_schema(wit("f32")) == {"type": "number"}
    assert value_schema(wit("f64")) == {"type": "number"}
    assert value_schema(wit("char")) == {"type": "string", "minLength": 1, "maxLength": 1}
    assert value_schema(wit("string")) == {"type": "string"}


def test_lists(wit: Wit) -> None:
    assert value_schema(wit("bytes")) == {"type": "string", "contentEncoding": "base64"}
    assert value_schema(wit("strings")) == {"type": "array", "items": {"type": "string"}}


def test_record_keeps_kebab_names_and_requires_every_field(wit: Wit) -> None:
    schema = value_schema(wit("point"))
    assert schema["type"] == "object"
    assert list(schema["properties"]) == ["x-pos", "label", "tags", "color", "limit"]
    assert schema["required"] == ["x-pos", "label", "tags", "color", "limit"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["color"] == {"type": "string", "enum": ["red", "green-blue"]}
    assert schema["properties"]["limit"] == {
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**32 - 1}, {"type": "null"}]
    }


def test_tuple(wit: Wit) -> None:
    assert value_schema(wit("pair")) == {
        "type": "array",
        "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 255}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
        "items": False,
    }


def test_enum_and_flags(wit: Wit) -> None:
    assert value_schema(wit("color")) == {"type": "string", "enum": ["red", "green-blue"]}
    assert value_schema(wit("perms")) == {
        "type": "array",
        "items": {"type": "string", "enum": ["read", "write", "exec-all"]},
        "uniqueItems": True,
    }


def test_variant_is_one_of_tagged_objects(wit: Wit) -> None:
    cases = value_schema(wit("shape"))["oneOf"]
    assert cases[0] == {
        "type": "object",
        "properties": {"tag": {"const": "circle"}, "value": {"type": "number"}},
        "required": ["tag", "value"],
        "additionalProperties": False,
    }
    assert cases[2] == {
        "type": "object",
        "properties": {"tag": {"const": "empty"}},
        "required": ["tag"],
        "additionalProperties": False,
    }


def test_option_and_nested_result(wit: Wit) -> None:
    assert value_schema(wit("opt-string")) == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert value_schema(wit("res-unit-string")) == {
        "oneOf": [
            {
                "type": "object",
                "properties": {"ok": {"type": "null"}},
                "required": ["ok"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"err": {"type": "string"}},
                "required": ["err"],
                "additionalProperties": False,
            },
        ]
    }


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("shape", {"tag": "circle", "value": 1.5}, {"tag": "empty", "value": 1}),
        ("either", {"tag": "neither"}, {"tag": "left"}),
        ("perms", ["read", "exec-all"], ["read", "read"]),
        ("res-f64-string", {"err": "no"}, {"ok": 1, "err": "x"}),
        ("nested", [None, {"x-pos": 1, "label": "", "tags": [], "color": "red", "limit": 3}], [{}]),
        ("pair", [1, "a"], [1, "a", 2]),
        ("char", "é", "ab"),
    ],
)
def test_schemas_accept_and_reject_like_the_codec(wit: Wit, name: str, good: Any, bad: Any) -> None:
    validator = jsonschema.Draft202012Validator(value_schema(wit(name)))
    assert validator.is_valid(good)
    assert not validator.is_valid(bad)


def test_params_schema_requires_non_option_params(zoo: Zoo) -> None:
    schema = params_schema(zoo.funcs["opt-u32"])
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert "x" not in schema["required"]
    assert "p0" in schema["required"]
    assert list(schema["properties"])[:2] == ["x", "p0"]


def test_output_schema_of_plain_and_result_functions(zoo: Zoo) -> None:
    schema, is_result = output_schema(zoo.funcs["u8"])
    assert is_result is False
    assert schema is not None and schema["type"] == "array"


def _func(engine: wasmtime.Engine, wat_result: str) -> Any:
    text = f"""(component
      (core module $m (memory (export "mem") 1) (func (export "f") (result i32) unreachable))
      (core instance $i (instantiate $m))
      (func (export "f") {wat_result}
        (canon lift (core func $i "f") (memory (core memory $i "mem")))))"""
    return wc.Component(engine, text).type.exports(engine)["f"].ty


def test_output_schema_unwraps_top_level_result() -> None:
    engine = wasmtime.Engine()
    assert output_schema(_func(engine, "(result (result u32 (error string)))")) == (
        {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        True,
    )
    assert output_schema(_func(engine, "(result (result (error string)))")) == (None, True)
    assert output_schema(_func(engine, "(result s32)")) == (
        {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
        False,
    )


def test_no_result_has_no_output_schema() -> None:
    engine = wasmtime.Engine()
    text = """(component
      (core module $m (func (export "f")))
      (core instance $i (instantiate $m))
      (func (export "f") (canon lift (core func $i "f"))))"""
    func = wc.Component(engine, text).type.exports(engine)["f"].ty
    assert output_schema(func) == (None, False)
    assert params_schema(func) == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


def test_resources_have_no_json_form() -> None:
    engine = wasmtime.Engine()
    text = """(component
      (type $r (resource (rep i32)))
      (export $re "r" (type $r))
      (core module $m (func (export "f") (param i32)))
      (core instance $i (instantiate $m))
      (func (export "take") (param "handle" (own $re)) (canon lift (core func $i "f"))))"""
    func = wc.Component(engine, text).type.exports(engine)["take"].ty
    with pytest.raises(WitTypeError, match=r"parameter 'handle': WIT type own<resource> has no JSON form"):
        params_schema(func)
