"""The base of every settings model: an unknown key is an error, and settings never change.

Settings are msgspec Structs: a worker restart is mostly imports, and pydantic's import plus
building its models cost ~100 ms of a ~260 ms start (issue 17), msgspec's ~15 ms. The Struct
declarations are the one statement of each setting's name, type, default and constraint
(``msgspec.Meta``); rules across fields are each model's ``__post_init__``, which runs on every
load and every construction.

pydantic stays only on the error path: when msgspec refuses a config, ``schemas.settings_errors``
checks the same data again with pydantic models derived from these Structs, so a mistake is worded
as it always was (``worker.limits.memory_mib: Input should be greater than or equal to 1``).

The three pydantic-style methods the code base calls (``model_validate``, ``model_copy``,
``model_fields_set``) keep their names, so their callers need not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import msgspec


def _decode_custom(type_: type, value: Any) -> Any:
    """msgspec's hook for the one type it does not know: ``Path``, given as a string in TOML."""
    if type_ is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError(f"{type_!r}")


NOT_A = "not_a"
"""Key of ``msgspec.Meta(extra=...)``: what a pattern means, for the message ``'x' is not <meaning>``."""

_HIDDEN = "**********"
"""What ``repr`` shows of a secret field that is set."""

_FIELDS_SET = "_fields_set"
"""Where an instance keeps the names of the fields its input gave (in its ``__dict__``)."""


class SettingsModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, dict=True):
    """A section of ``toolbus.toml``: unknown keys are refused (a typo fails at start-up), frozen.

    ``dict=True`` gives each instance a ``__dict__`` beside its fields, which holds only the names
    of the fields its input gave (``model_fields_set``); it is not a field, not compared, not encoded.
    """

    secret_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields whose values ``repr`` never shows (passwords, keys)."""

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """Build and check an instance from plain data (a TOML table, a dict).

        Raises:
            pydantic.ValidationError: a value breaks a rule; worded as pydantic words it.
        """
        try:
            # Not strict: "3001" for a port or 64.0 for a count pass, as they did with pydantic.
            instance = msgspec.convert(data, cls, strict=False, dec_hook=_decode_custom)
        except msgspec.ValidationError as exc:
            from schemas.settings_errors import raise_described  # the error path alone loads pydantic

            raise_described(cls, data, exc)
        _note_fields_set(instance, data)
        return instance

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A copy with the fields in ``update`` replaced (counted as given); the model's rules run again."""
        copy = msgspec.structs.replace(self, **(update or {}))
        copy.__dict__[_FIELDS_SET] = self.model_fields_set | frozenset(update or ())
        return copy

    @property
    def model_fields_set(self) -> frozenset[str]:
        """The fields the input gave explicitly (for an instance built in code: those not at their default)."""
        given: frozenset[str] | None = self.__dict__.get(_FIELDS_SET)
        if given is not None:
            return given
        return frozenset(f.name for f in msgspec.structs.fields(self) if getattr(self, f.name) != _default(f))

    def __repr__(self) -> str:
        shown = (f"{name}={value if name in self.secret_fields else repr(value)}" for name, value in self._shown())
        return f"{type(self).__name__}({', '.join(shown)})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # msgspec gives every Struct one listing each field's value: rich and other pretty
        # printers would show the secrets __repr__ hides.
        return list(self._shown())

    def _shown(self) -> Iterator[tuple[str, Any]]:
        """Each field and its value, a secret one (when set) as ``**********``."""
        for f in msgspec.structs.fields(self):
            value = getattr(self, f.name)
            hidden = f.name in self.secret_fields and value is not None
            yield f.name, _HIDDEN if hidden else value


def _default(field: msgspec.structs.FieldInfo) -> Any:
    """A field's default (a fresh one from its factory); a required field's is no value at all."""
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return msgspec.NODEFAULT


def _note_fields_set(value: Any, data: Any) -> None:
    """Record, on every model in ``value``, which of its fields ``data`` (its input) gave."""
    if isinstance(value, SettingsModel) and isinstance(data, dict):
        names = {f.name for f in msgspec.structs.fields(value)}
        value.__dict__[_FIELDS_SET] = frozenset(k for k in data if k in names)
        for name in value.__dict__[_FIELDS_SET]:
            _note_fields_set(getattr(value, name), data[name])
    # Models sit in lists and dicts one level deep ([[components]], [auth.api_keys.NAME]): only
    # their items are visited, never plain data, whose nesting (a command's input_schema, from
    # a publisher) is the input's to choose and would exhaust the stack here.
    elif isinstance(value, list) and isinstance(data, list):
        for item, raw in zip(value, data, strict=False):
            if isinstance(item, SettingsModel):
                _note_fields_set(item, raw)
    elif isinstance(value, dict) and isinstance(data, dict):
        for key, item in value.items():
            if isinstance(item, SettingsModel):
                _note_fields_set(item, data.get(key))
