"""JSON ↔ wasmtime values, checked by round trips through a real guest."""

from __future__ import annotations

from typing import Any

import pytest
from wasmtime import component as wc

from schemas.errors import ArgumentError
from schemas.wit_values import format_path, from_wasm, to_wasm, which_case
from tests.schemas.conftest import Wit
from tests.schemas.wit_zoo import Zoo

POINT = {"x-pos": 1.5, "label": "héllo", "tags": ["a", "b"], "color": "green-blue", "limit": 7}

ROUND_TRIPS: list[tuple[str, Any]] = [
    ("bool", True),
    ("bool", False),
    ("s8", -128),
    ("s16", 32767),
    ("s32", -(2**31)),
    ("s64", 2**63 - 1),
    ("u8", 255),
    ("u16", 0),
    ("u32", 2**32 - 1),
    ("u64", 2**64 - 1),
    ("f32", 0.5),
    ("f64", -2.25),
    ("char", "é"),
    ("char", "🦀"),
    ("string", "héllo wörld"),
    ("string", ""),
    ("bytes", "AAEC/w=="),
    ("bytes", ""),
    ("strings", ["x", "", "zz"]),
    ("point", POINT),
    ("point", {**POINT, "limit": None, "tags": []}),
    ("pair", [3, "three"]),
    ("color", "red"),
    ("perms", ["read", "exec-all"]),
    ("perms", []),
    ("shape", {"tag": "circle", "value": 2.5}),
    ("shape", {"tag": "label", "value": "hi"}),
    ("shape", {"tag": "empty"}),
    ("either", {"tag": "left", "value": 1}),
    ("either", {"tag": "right", "value": 1}),
    ("either", {"tag": "neither"}),
    ("opt-u32", None),
    ("opt-u32", 0),
    ("opt-string", "s"),
    ("opt-opt", None),
    ("opt-opt", 4),
    ("res-f64-string", {"ok": 0.25}),
    ("res-f64-string", {"err": "division by zero"}),
    ("res-string-string", {"ok": "fine"}),
    ("res-string-string", {"err": "bad"}),
    ("res-unit-string", {"ok": None}),
    ("res-unit-string", {"err": "bad"}),
    ("res-u32-unit", {"ok": 3}),
    ("res-u32-unit", {"err": None}),
    ("res-unit-unit", {"ok": None}),
    ("res-unit-unit", {"err": None}),
    ("nested", [None, POINT]),
]


@pytest.mark.parametrize(("name", "value"), ROUND_TRIPS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROUND_TRIPS)])
def test_round_trip_through_guest(zoo: Zoo, name: str, value: Any) -> None:
    ty = zoo.types[name]
    assert from_wasm(ty, zoo.echo(name, to_wasm(ty, value))) == value


def test_ints_are_accepted_for_floats(zoo: Zoo) -> None:
    lowered = to_wasm(zoo.types["f64"], 3)
    assert lowered == 3.0 and isinstance(lowered, float)
    assert from_wasm(zoo.types["f64"], zoo.echo("f64", lowered)) == 3.0


def test_flags_come_back_in_declaration_order(wit: Wit) -> None:
    assert from_wasm(wit("perms"), {"exec-all", "read"}) == ["read", "exec-all"]


def test_record_becomes_object_with_kebab_attributes(wit: Wit) -> None:
    record = to_wasm(wit("point"), POINT)
    assert isinstance(record, wc.Record)
    assert getattr(record, "x-pos") == 1.5


def test_record_option_fields_may_be_omitted(wit: Wit) -> None:
    record = to_wasm(wit("point"), {k: v for k, v in POINT.items() if k != "limit"})
    assert record.limit is None


@pytest.mark.parametrize(
    ("name", "wasm", "expected"),
    [
        # result<f64, string> is untagged in wasmtime-py: the bare float or the bare string.
        ("res-f64-string", 0.25, ("ok", 0.25)),
        ("res-f64-string", "division by zero", ("err", "division by zero")),
        ("res-unit-string", None, ("ok", None)),
        ("res-unit-string", "bad", ("err", "bad")),
        ("shape", "x", ("label", "x")),
        ("shape", None, ("empty", None)),
        ("either", wc.Variant("right", 2), ("right", 2)),
    ],
)
def test_which_case_of_untagged_values(wit: Wit, name: str, wasm: Any, expected: tuple[str, Any]) -> None:
    assert which_case(wit(name), wasm) == expected


def test_untagged_result_is_lowered_untagged(wit: Wit) -> None:
    assert to_wasm(wit("res-f64-string"), {"ok": 1}) == 1.0
    assert to_wasm(wit("res-f64-string"), {"err": "e"}) == "e"
    assert to_wasm(wit("res-string-string"), {"err": "e"}) == wc.Variant("err", "e")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("s32", 3_000_000_000, "3000000000 is out of range for s32"),
        ("u8", -1, "-1 is out of range for u8"),
        ("s32", True, "expected integer, got boolean"),
        ("s32", 1.0, "expected integer, got number"),
        ("f64", "1", "expected number, got string"),
        ("bool", 1, "expected boolean, got integer"),
        ("char", "ab", "expected a single character, got 2 characters"),
        ("string", None, "expected string, got null"),
        ("bytes", "not base64!", "not valid base64"),
        ("color", "blue", "'blue' is not one of red, green-blue"),
        ("pair", [1], "expected 2 items, got 1"),
        ("shape", {"tag": "empty", "value": 1}, "case 'empty' takes no value"),
        ("shape", {"tag": "circle"}, "case 'circle' needs a value"),
        ("res-f64-string", {"ok": 1, "err": "x"}, 'expected object with one key, "ok" or "err", got object'),
    ],
)
def test_argument_errors_say_why(wit: Wit, name: str, value: Any, message: str) -> None:
    with pytest.raises(ArgumentError) as info:
        to_wasm(wit(name), value, ("a",))
    assert str(info.value) == f"a: {message}"


def test_argument_errors_name_the_nested_field(wit: Wit) -> None:
    bad = {**POINT, "tags": ["a", "b", 3]}
    with pytest.raises(ArgumentError) as info:
        to_wasm(wit("point"), bad, ("item",))
    assert str(info.value) == "item.tags[2]: expected string, got integer"
    assert info.value.path == ("item", "tags", 2)


def test_argument_errors_in_records_and_variants(wit: Wit) -> None:
    with pytest.raises(ArgumentError, match=r"^item: missing field 'label'$"):
        to_wasm(wit("point"), {k: v for k, v in POINT.items() if k != "label"}, ("item",))
    with pytest.raises(ArgumentError, match=r"^item: unexpected field 'extra'$"):
        to_wasm(wit("point"), {**POINT, "extra": 1}, ("item",))
    with pytest.raises(ArgumentError, match=r"^s\.value: expected number, got string$"):
        to_wasm(wit("shape"), {"tag": "circle", "value": "x"}, ("s",))
    with pytest.raises(ArgumentError, match=r"^p\[1\]: 'read' is given twice$|^p\[1\]: flag 'read' is given twice$"):
        to_wasm(wit("perms"), ["read", "read"], ("p",))
    with pytest.raises(ArgumentError, match=r"^r\.err: expected string, got integer$"):
        to_wasm(wit("res-f64-string"), {"err": 1}, ("r",))


def test_lone_surrogates_are_rejected(wit: Wit) -> None:
    with pytest.raises(ArgumentError, match="lone surrogate"):
        to_wasm(wit("string"), "\ud800", ("s",))


def test_format_path() -> None:
    assert format_path(()) == ""
    assert format_path(("item", "tags", 2, "x")) == "item.tags[2].x"
    assert format_path((0, "a")) == "[0].a"
