"""JSON values ↔ the Python values wasmtime-py passes to and from component functions.

The JSON shapes are the ones ``schemas.wit_schema`` describes. wasmtime-py's own shapes are
irregular, which is why this module exists:

- records are objects with attributes named in WIT kebab-case (``wasmtime.component.Record``);
- ``f64`` needs a ``float``, ``list<u8>`` needs ``bytes``, tuples need ``tuple``, flags ``set``;
- variants, options and results are *untagged* (the bare payload, ``None`` for a payload-less
  case) when their cases hold disjoint Python classes, and ``Variant(tag, payload)`` otherwise.
  So which case a returned value belongs to is decided by testing it against the case types.

wasmtime-py truncates out-of-range integers silently, so ranges are checked here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from wasmtime import component as wc

from schemas.errors import ArgumentError
from schemas.wit_schema import INT_RANGES, is_bytes, wit_name

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """Render a JSON path as ``item.tags[2]`` (empty for the root)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def json_type(value: Any) -> str:
    """JSON type name of a decoded JSON value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _fail(path: Path, why: str) -> ArgumentError:
    where = format_path(path)
    return ArgumentError(f"{where}: {why}" if where else why, path)


def _expected(path: Path, what: str, value: Any) -> ArgumentError:
    return _fail(path, f"expected {what}, got {json_type(value)}")


def _check_text(value: str, path: Path) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(path, "string is not valid Unicode (lone surrogate)") from None
    return value


def to_wasm(ty: Any, value: Any, path: Path = ()) -> Any:
    """Convert a decoded JSON value into the Python value wasmtime expects for ``ty``.

    Raises:
        ArgumentError: the value does not fit the type; the message starts with its path.
    """
    if isinstance(ty, wc.Bool):
        if not isinstance(value, bool):
            raise _expected(path, "boolean", value)
        return value
    bounds = INT_RANGES.get(type(ty))
    if bounds is not None:
        # bool is an int in Python but not in JSON; a float like 2.0 is not an integer either.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _expected(path, "integer", value)
        if not bounds[0] <= value <= bounds[1]:
            raise _fail(path, f"{value} is out of range for {wit_name(ty)}")
        return value
    if isinstance(ty, wc.F32 | wc.F64):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _expected(path, "number", value)
        try:
            return float(value)
        except OverflowError:
            raise _fail(path, f"{value} is out of range for {wit_name(ty)}") from None
    if isinstance(ty, wc.Char):
        if not isinstance(value, str):
            raise _expected(path, "string", value)
        if len(value) != 1:
            raise _fail(path, f"expected a single character, got {len(value)} characters")
        return _check_text(value, path)
    if isinstance(ty, wc.String):
        if not isinstance(value, str):
            raise _expected(path, "string", value)
        return _check_text(value, path)
    if isinstance(ty, wc.ListType):
        return _list_to_wasm(ty, value, path)
    if isinstance(ty, wc.RecordType):
        return _record_to_wasm(ty, value, path)
    if isinstance(ty, wc.TupleType):
        elements = ty.elements
        if not isinstance(value, list):
            raise _expected(path, f"array of {len(elements)} items", value)
        if len(value) != len(elements):
            raise _fail(path, f"expected {len(elements)} items, got {len(value)}")
        return tuple(to_wasm(e, v, (*path, i)) for i, (e, v) in enumerate(zip(elements, value, strict=True)))
    if isinstance(ty, wc.EnumType):
        names = ty.names
        if not isinstance(value, str):
            raise _expected(path, "string", value)
        if value not in names:
            raise _fail(path, f"{value!r} is not one of {', '.join(names)}")
        return value
    if isinstance(ty, wc.FlagsType):
        return _flags_to_wasm(ty, value, path)
    if isinstance(ty, wc.OptionType):
        if value is None:
            return _make_case(ty, "none", None)
        return _make_case(ty, "some", to_wasm(ty.payload, value, path))
    if isinstance(ty, wc.ResultType):
        return _result_to_wasm(ty, value, path)
    if isinstance(ty, wc.VariantType):
        return _variant_to_wasm(ty, value, path)
    raise _fail(path, f"WIT type {wit_name(ty)} cannot be passed as JSON")


def _list_to_wasm(ty: Any, value: Any, path: Path) -> Any:
    if is_bytes(ty):
        if not isinstance(value, str):
            raise _expected(path, "base64 string", value)
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(path, "not valid base64") from None
    if not isinstance(value, list):
        raise _expected(path, "array", value)
    element = ty.element
    return [to_wasm(element, v, (*path, i)) for i, v in enumerate(value)]


def _record_to_wasm(ty: Any, value: Any, path: Path) -> Any:
    if not isinstance(value, dict):
        raise _expected(path, "object", value)
    fields = ty.fields
    known = {name for name, _ in fields}
    for key in value:
        if key not in known:
            raise _fail(path, f"unexpected field {key!r}")
    record = wc.Record()
    for name, field in fields:
        if name not in value:
            if not isinstance(field, wc.OptionType):
                raise _fail(path, f"missing field {name!r}")
            setattr(record, name, _make_case(field, "none", None))
            continue
        # setattr, because WIT field names are kebab-case and wasmtime reads them with getattr.
        setattr(record, name, to_wasm(field, value[name], (*path, name)))
    return record


def _flags_to_wasm(ty: Any, value: Any, path: Path) -> set[str]:
    names = ty.names
    if not isinstance(value, list):
        raise _expected(path, "array of flag names", value)
    out: set[str] = set()
    for i, flag in enumerate(value):
        if not isinstance(flag, str):
            raise _expected((*path, i), "string", flag)
        if flag not in names:
            raise _fail((*path, i), f"{flag!r} is not one of {', '.join(names)}")
        if flag in out:
            raise _fail((*path, i), f"flag {flag!r} is given twice")
        out.add(flag)
    return out


def _result_to_wasm(ty: Any, value: Any, path: Path) -> Any:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("ok", "err"):
        raise _expected(path, 'object with one key, "ok" or "err"', value)
    tag, payload = next(iter(value.items()))
    case_ty = ty.ok if tag == "ok" else ty.err
    if case_ty is None:
        if payload is not None:
            raise _fail((*path, tag), f"expected null, got {json_type(payload)}")
        return _make_case(ty, tag, None)
    return _make_case(ty, tag, to_wasm(case_ty, payload, (*path, tag)))


def _variant_to_wasm(ty: Any, value: Any, path: Path) -> Any:
    cases = dict(ty.cases)
    if not isinstance(value, dict):
        raise _expected(path, 'object with "tag"', value)
    for key in value:
        if key not in ("tag", "value"):
            raise _fail(path, f"unexpected field {key!r}")
    tag = value.get("tag")
    if not isinstance(tag, str) or tag not in cases:
        raise _fail((*path, "tag"), f"expected one of {', '.join(cases)}, got {tag!r}")
    case_ty = cases[tag]
    if case_ty is None:
        if "value" in value:
            raise _fail(path, f"case {tag!r} takes no value")
        return _make_case(ty, tag, None)
    if "value" not in value:
        raise _fail(path, f"case {tag!r} needs a value")
    return _make_case(ty, tag, to_wasm(case_ty, value["value"], (*path, "value")))


def _cases(ty: Any) -> Sequence[tuple[str, Any]]:
    if isinstance(ty, wc.OptionType):
        return [("none", None), ("some", ty.payload)]
    if isinstance(ty, wc.ResultType):
        return [("ok", ty.ok), ("err", ty.err)]
    return list(ty.cases)


def _make_case(ty: Any, tag: str, payload: Any) -> Any:
    """Build the wasmtime value of one case of a variant, option or result."""
    if ty._tagged():
        return wc.Variant(tag, payload)
    return payload


def _case_classes(case_ty: Any) -> tuple[type[Any], ...]:
    classes: set[type[Any]] = set()
    if case_ty is None:
        return (type(None),)
    case_ty.add_classes(classes)
    return tuple(classes)


def which_case(ty: Any, value: Any) -> tuple[str, Any]:
    """Tell which case of a variant, option or result a wasmtime value is: ``(tag, payload)``.

    Untagged values are matched by exact class (``bool`` is not taken for ``int``).
    """
    if ty._tagged():
        return value.tag, value.payload
    for tag, case_ty in _cases(ty):
        classes = _case_classes(case_ty)
        # wasmtime lists ``object`` for a payload-less case nested in the payload (an option).
        if type(value) in classes or (value is None and object in classes):
            return tag, value
    raise TypeError(f"{type(value).__name__} value fits no case of {wit_name(ty)}")


def from_wasm(ty: Any, value: Any) -> Any:
    """Convert a value wasmtime returned for ``ty`` into plain JSON values."""
    if isinstance(ty, wc.Bool | wc.Char | wc.String | wc.EnumType) or type(ty) in INT_RANGES:
        return value
    if isinstance(ty, wc.F32 | wc.F64):
        return float(value)
    if isinstance(ty, wc.ListType):
        if is_bytes(ty):
            return base64.b64encode(value).decode("ascii")
        element = ty.element
        return [from_wasm(element, v) for v in value]
    if isinstance(ty, wc.RecordType):
        return {name: from_wasm(field, getattr(value, name)) for name, field in ty.fields}
    if isinstance(ty, wc.TupleType):
        return [from_wasm(e, v) for e, v in zip(ty.elements, value, strict=True)]
    if isinstance(ty, wc.FlagsType):
        # Declaration order: stable, and the order the WIT author chose.
        return [name for name in ty.names if name in value]
    if isinstance(ty, wc.OptionType):
        tag, payload = which_case(ty, value)
        return None if tag == "none" else from_wasm(ty.payload, payload)
    if isinstance(ty, wc.ResultType):
        tag, payload = which_case(ty, value)
        case_ty = ty.ok if tag == "ok" else ty.err
        return {tag: None if case_ty is None else from_wasm(case_ty, payload)}
    if isinstance(ty, wc.VariantType):
        tag, payload = which_case(ty, value)
        case_ty = dict(ty.cases)[tag]
        return {"tag": tag} if case_ty is None else {"tag": tag, "value": from_wasm(case_ty, payload)}
    raise TypeError(f"WIT type {wit_name(ty)} has no JSON form")
