"""JSON Schema (draft 2020-12 vocabulary) of WIT value types, as wasmtime reflects them.

The JSON shapes here are the ones ``schemas.wit_values`` reads and writes:

- ``variant`` → ``{"tag": "<case>", "value": <payload>}`` (no ``value`` for payload-less cases)
- ``option<T>`` → ``T`` or ``null``
- ``result<T, E>`` nested in a value → ``{"ok": T}`` or ``{"err": E}`` (``null`` for a missing side)
- ``flags`` → array of unique flag names; ``list<u8>`` → base64 string; ``tuple`` → array

A top-level ``result<T, E>`` of a function is not a value: Ok is the tool's output and Err
becomes ``isError`` (see ``output_schema``).
"""

from __future__ import annotations

from typing import Any

from wasmtime import component as wc

from schemas.errors import WitTypeError

JsonSchema = dict[str, Any]

# (minimum, maximum) of each WIT integer type.
INT_RANGES: dict[type[Any], tuple[int, int]] = {
    wc.S8: (-(2**7), 2**7 - 1),
    wc.S16: (-(2**15), 2**15 - 1),
    wc.S32: (-(2**31), 2**31 - 1),
    wc.S64: (-(2**63), 2**63 - 1),
    wc.U8: (0, 2**8 - 1),
    wc.U16: (0, 2**16 - 1),
    wc.U32: (0, 2**32 - 1),
    wc.U64: (0, 2**64 - 1),
}

WIT_NAMES: dict[type[Any], str] = {
    wc.Bool: "bool",
    wc.S8: "s8",
    wc.S16: "s16",
    wc.S32: "s32",
    wc.S64: "s64",
    wc.U8: "u8",
    wc.U16: "u16",
    wc.U32: "u32",
    wc.U64: "u64",
    wc.F32: "f32",
    wc.F64: "f64",
    wc.Char: "char",
    wc.String: "string",
    wc.ListType: "list",
    wc.RecordType: "record",
    wc.TupleType: "tuple",
    wc.VariantType: "variant",
    wc.EnumType: "enum",
    wc.OptionType: "option",
    wc.ResultType: "result",
    wc.FlagsType: "flags",
    wc.OwnType: "own<resource>",
    wc.BorrowType: "borrow<resource>",
    wc.FutureType: "future",
    wc.StreamType: "stream",
    wc.ErrorContext: "error-context",
}

_NULL: JsonSchema = {"type": "null"}


def wit_name(ty: Any) -> str:
    """Short WIT name of a wasmtime value type (``s32``, ``record``, ``future``…)."""
    return WIT_NAMES.get(type(ty), type(ty).__name__)


def is_bytes(ty: Any) -> bool:
    """True for ``list<u8>``, which travels as a base64 string."""
    return isinstance(ty, wc.ListType) and isinstance(ty.element, wc.U8)


def value_schema(ty: Any) -> JsonSchema:
    """JSON Schema of one WIT value type.

    Raises:
        WitTypeError: the type (or a type inside it) is a resource, future, stream or
            error-context, which have no JSON form.
    """
    if isinstance(ty, wc.Bool):
        return {"type": "boolean"}
    bounds = INT_RANGES.get(type(ty))
    if bounds is not None:
        return {"type": "integer", "minimum": bounds[0], "maximum": bounds[1]}
    if isinstance(ty, wc.F32 | wc.F64):
        return {"type": "number"}
    if isinstance(ty, wc.Char):
        return {"type": "string", "minLength": 1, "maxLength": 1}
    if isinstance(ty, wc.String):
        return {"type": "string"}
    if isinstance(ty, wc.ListType):
        if is_bytes(ty):
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "array", "items": value_schema(ty.element)}
    if isinstance(ty, wc.RecordType):
        fields = ty.fields
        return {
            "type": "object",
            "properties": {name: value_schema(field) for name, field in fields},
            "required": [name for name, _ in fields],
            "additionalProperties": False,
        }
    if isinstance(ty, wc.TupleType):
        elements = ty.elements
        return {
            "type": "array",
            "prefixItems": [value_schema(e) for e in elements],
            "minItems": len(elements),
            "maxItems": len(elements),
            "items": False,
        }
    if isinstance(ty, wc.VariantType):
        return {"oneOf": [_variant_case(name, payload) for name, payload in ty.cases]}
    if isinstance(ty, wc.EnumType):
        return {"type": "string", "enum": ty.names}
    if isinstance(ty, wc.FlagsType):
        return {"type": "array", "items": {"type": "string", "enum": ty.names}, "uniqueItems": True}
    if isinstance(ty, wc.OptionType):
        return {"anyOf": [value_schema(ty.payload), _NULL]}
    if isinstance(ty, wc.ResultType):
        return {"oneOf": [_result_side("ok", ty.ok), _result_side("err", ty.err)]}
    raise WitTypeError(f"WIT type {wit_name(ty)} has no JSON form")


def _variant_case(name: str, payload: Any) -> JsonSchema:
    if payload is None:
        return {
            "type": "object",
            "properties": {"tag": {"const": name}},
            "required": ["tag"],
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "properties": {"tag": {"const": name}, "value": value_schema(payload)},
        "required": ["tag", "value"],
        "additionalProperties": False,
    }


def _result_side(key: str, payload: Any) -> JsonSchema:
    return {
        "type": "object",
        "properties": {key: _NULL if payload is None else value_schema(payload)},
        "required": [key],
        "additionalProperties": False,
    }


def params_schema(func_type: Any) -> JsonSchema:
    """Input schema of a function: one property per parameter, optional ones not required.

    Raises:
        WitTypeError: a parameter's type has no JSON form; the message names the parameter.
    """
    properties: JsonSchema = {}
    required: list[str] = []
    for name, ty in func_type.params:
        try:
            properties[name] = value_schema(ty)
        except WitTypeError as exc:
            raise WitTypeError(f"parameter {name!r}: {exc}") from exc
        if not isinstance(ty, wc.OptionType):
            required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def output_schema(func_type: Any) -> tuple[JsonSchema | None, bool]:
    """Schema of a function's output and whether its top-level result is a ``result<T, E>``.

    For a top-level ``result<T, E>`` the schema is that of ``T`` (None when T is absent),
    because an Err becomes ``isError`` rather than output.

    Raises:
        WitTypeError: the result type has no JSON form.
    """
    result = func_type.result
    if result is None:
        return None, False
    try:
        if isinstance(result, wc.ResultType):
            ok = result.ok
            if result.err is not None:
                value_schema(result.err)  # an Err must still be printable
            return (None if ok is None else value_schema(ok)), True
        return value_schema(result), False
    except WitTypeError as exc:
        raise WitTypeError(f"result: {exc}") from exc
