"""Tool argument validation against a tool's inputSchema, with messages that name the field.

The gateway validates before publishing; the worker validates again for direct NATS callers.
Both use this module so a client sees the same words whichever path it took.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from schemas.codec import decode_json, encode
from schemas.wire import JsonSchema

_VALIDATOR_CACHE_SIZE = 4096
"""Compiled validators kept per process; one per (tool, version) in practice."""


@lru_cache(maxsize=_VALIDATOR_CACHE_SIZE)
def _validator(schema_json: bytes) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(decode_json(schema_json))


def compile_validator(schema: JsonSchema) -> jsonschema.Draft202012Validator:
    """A compiled validator for ``schema`` (cached by the schema's content)."""
    return _validator(encode(schema))


def _field_path(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def argument_problem(validator: jsonschema.Draft202012Validator, arguments: Any) -> str | None:
    """Return a message naming the offending field and why, or None when the arguments fit."""
    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    error = best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    where = _field_path(error.absolute_path)
    if error.validator == "required" and error.validator_value:
        # jsonschema reports a missing property at its parent; name the property itself.
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        if missing:
            name = ".".join(filter(None, [where, str(missing[0])]))
            return f"{name}: required argument is missing"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            name = ".".join(filter(None, [where, extra[0]]))
            return f"{name}: unexpected argument"
    return f"{where or '(arguments)'}: {error.message}"
