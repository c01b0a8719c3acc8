"""Config mistakes worded as pydantic words them, by pydantic models derived from the settings' Structs.

Loaded only when msgspec refused some settings (``SettingsModel.model_validate``): a worker that
starts on a good config never imports pydantic. The Structs stay the one statement of every rule;
the models here are made from them, field by field and constraint by constraint, on first need.
They check field rules only (types, bounds, patterns, unknown keys, capability kinds): a rule
across fields lives in a Struct's ``__post_init__`` alone, and its message is msgspec's, placed at
the path msgspec names.
"""

from __future__ import annotations

import re
import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

import msgspec
import pydantic

from schemas.settings_model import NOT_A

_BOUNDS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")

_WHERE = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[([^\]]*)\]")


def raise_described(model: type[msgspec.Struct], data: Any, refused: msgspec.ValidationError) -> NoReturn:
    """Raise the ``pydantic.ValidationError`` that says what is wrong with ``data`` as ``model``.

    Raises:
        pydantic.ValidationError: always.
    """
    twin(model).model_validate(data)
    # Field by field the data is fine: a rule across fields (a Struct's __post_init__) refused it.
    match = _WHERE.match(str(refused))
    message, path = (match["message"], match["path"]) if match else (str(refused), "")
    loc = tuple(int(index) if index else (name or key) for name, index, key in _STEP.findall(path))
    error = {"type": "value_error", "loc": loc, "input": data, "ctx": {"error": ValueError(message)}}
    raise pydantic.ValidationError.from_exception_data(model.__name__, [error])  # type: ignore[list-item]


@cache
def twin(model: type[msgspec.Struct]) -> type[pydantic.BaseModel]:
    """The pydantic model with ``model``'s fields, types, defaults and constraints (and tag, if any)."""
    hints = typing.get_type_hints(model, include_extras=True)
    fields: dict[str, Any] = {}
    config = model.__struct_config__
    if config.tag_field is not None:
        fields[config.tag_field] = (Literal[config.tag], ...)
    for field in msgspec.structs.fields(model):
        if field.default is not msgspec.NODEFAULT:
            default: Any = field.default
        elif field.default_factory is not msgspec.NODEFAULT:
            default = pydantic.Field(default_factory=field.default_factory)
        else:
            default = ...
        fields[field.name] = (_translated(hints[field.name]), default)
    return pydantic.create_model(model.__name__, __config__=pydantic.ConfigDict(extra="forbid", frozen=True), **fields)


def _translated(hint: Any) -> Any:
    """``hint`` with every Struct replaced by its twin and every ``msgspec.Meta`` by pydantic's terms."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *metadata = get_args(hint)
        terms = [_term(m) if isinstance(m, msgspec.Meta) else m for m in metadata]
        return Annotated[(_translated(base), *terms)]
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return twin(hint)
    if origin in (Union, types.UnionType):
        members = get_args(hint)
        union = Union[tuple(_translated(m) for m in members)]  # type: ignore[valid-type]  # noqa: UP007
        tags = {m.__struct_config__.tag_field for m in members if isinstance(m, type) and issubclass(m, msgspec.Struct)}
        tag_field = next(iter(tags)) if len(tags) == 1 else None
        return union if tag_field is None else Annotated[union, pydantic.Field(discriminator=tag_field)]
    if origin is list:
        return list[_translated(get_args(hint)[0])]  # type: ignore[misc]
    if origin is dict:
        key, value = get_args(hint)
        return dict[_translated(key), _translated(value)]  # type: ignore[misc]
    return hint


def _term(meta: msgspec.Meta) -> Any:
    """pydantic's form of one ``msgspec.Meta``: the same bounds, or the pattern's own message."""
    meaning = (meta.extra or {}).get(NOT_A)
    if meaning is not None:
        pattern = re.compile(str(meta.pattern))

        def check(value: str) -> str:
            if not pattern.match(value):
                raise ValueError(f"{value!r} is not {meaning}")
            return value

        return pydantic.AfterValidator(check)
    terms = {b: getattr(meta, b) for b in _BOUNDS if getattr(meta, b) is not None}
    if "pattern" in terms:
        # A Struct's pattern is Python's (end of text is \Z); pydantic's Rust regex spells it $
        # (no final-newline exception there), and its message shows the pattern as it always did.
        terms["pattern"] = terms["pattern"].replace(r"\Z", "$")
    return pydantic.Field(**terms)
