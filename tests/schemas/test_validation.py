"""Argument validation: the fast check never disagrees with jsonschema, and messages name the field."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest

from schemas.validation import MAX_REPORTED_PROBLEMS, compile_validator

INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
SCHEMAS: dict[str, dict[str, Any]] = {
    "add": {
        "type": "object",
        "properties": {"a": INT32, "b": INT32},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
    "mixed": {
        "type": "object",
        "description": "every simple kind",
        "properties": {
            "flag": {"type": "boolean"},
            "ratio": {"type": "number", "description": "a float"},
            "count": {"type": "integer", "minimum": 0, "maximum": 255},
            "letter": {"type": "string", "minLength": 1, "maxLength": 1},
            "color": {"type": "string", "enum": ["red", "green-blue"]},
            "name": {"type": "string"},
        },
        "required": ["flag", "name"],
        "additionalProperties": False,
    },
    "open": {"type": "object", "properties": {"x": {"type": "number"}}},
    "nested (jsonschema only)": {
        "type": "object",
        "properties": {"item": {"type": "object", "properties": {"n": INT32}, "required": ["n"]}},
        "required": ["item"],
    },
}
VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 255, 256, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 3.0, 2.5, -0.0, 1e308,
    "", "a", "ab", "red", "green-blue", "blue", "é", [], [1], {}, {"n": 1}, {"n": "1"},
]  # fmt: skip


_POOLS: dict[str, list[Any]] = {}


def _fitting(key: str, schema: dict[str, Any]) -> list[Any]:
    """The sample values that fit ``schema`` (computed once per property)."""
    pool_key = f"{key}:{schema}"
    if pool_key not in _POOLS:
        _POOLS[pool_key] = [v for v in VALUES if jsonschema.Draft202012Validator(schema).is_valid(v)]
    return _POOLS[pool_key]


def random_arguments(rng: random.Random, schema: dict[str, Any]) -> dict[str, Any]:
    """Mostly plausible arguments (each field usually fits), with every kind of mistake mixed in."""
    arguments = {}
    for key, sub in schema.get("properties", {}).items():
        fitting = _fitting(key, sub)
        if rng.random() < 0.9:
            arguments[key] = rng.choice(fitting) if fitting and rng.random() < 0.9 else rng.choice(VALUES)
    if rng.random() < 0.1:
        arguments["extra"] = rng.choice(VALUES)
    return arguments


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_verdict_is_always_jsonschemas(name: str) -> None:
    schema = SCHEMAS[name]
    ours, reference = compile_validator(schema), jsonschema.Draft202012Validator(schema)
    rng = random.Random(name)
    verdicts = set()
    for _ in range(4000):
        arguments = random_arguments(rng, schema)
        verdict = reference.is_valid(arguments)
        verdicts.add(verdict)
        assert ours.is_valid(arguments) == verdict, arguments
        assert (ours.problem(arguments) is None) == verdict
    assert verdicts == {True, False}, "the generator must produce both valid and invalid arguments"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"a": 1}, "b: required argument is missing"),
        ({"a": 1, "b": 2, "c": 3}, "c: unexpected argument"),
        ({"a": "x", "b": 2}, "a: 'x' is not of type 'integer'"),
        ({"a": 2**31, "b": 2}, "a: 2147483648 is greater than the maximum of 2147483647"),
        ({"a": True, "b": 2}, "a: True is not of type 'integer'"),
    ],
)
def test_messages_name_the_field(arguments: dict[str, Any], message: str) -> None:
    assert compile_validator(SCHEMAS["add"]).problem(arguments) == message


def test_a_value_that_is_not_an_object_is_refused() -> None:
    assert compile_validator(SCHEMAS["add"]).problem([1, 2]) == "arguments must be a JSON object, got list"


def test_an_integral_float_is_an_integer_as_jsonschema_says() -> None:
    # The fast check only takes exact ints; jsonschema then accepts 3.0, and its verdict stands.
    assert compile_validator(SCHEMAS["add"]).is_valid({"a": 3.0, "b": 1})


def test_every_problem_is_named_in_one_sorted_message() -> None:
    message = compile_validator(SCHEMAS["add"]).problem({"b": "x", "z": 1, "y": 2})
    assert message == (
        "a: required argument is missing; b: 'x' is not of type 'integer'; "
        "y: unexpected argument; z: unexpected argument"
    )


def test_past_the_cap_the_message_counts_the_rest() -> None:
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    extra = {f"k{i:02}": i for i in range(MAX_REPORTED_PROBLEMS + 3)}
    message = compile_validator(schema).problem(extra)
    assert message is not None
    assert message.count("unexpected argument") == MAX_REPORTED_PROBLEMS
    assert message.startswith("k00: unexpected argument; ")
    assert message.endswith("; and 3 more")
