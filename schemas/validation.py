"""Tool argument validation against a tool's inputSchema, with one message naming every bad field.

The gateway validates before publishing; the worker validates again for direct NATS callers.
Both use this module, and word the refusal with ``invalid_arguments_message`` (as does a
component binding the arguments to its WIT types), so a client sees the same words whichever
path it took.

Validation is on every call's hot path, so each schema is compiled twice: jsonschema (the
authority, and the author of every message) and, for the common flat shapes (objects of
integers, numbers, strings, booleans and string enums), a plain-Python check that can only
say "valid". Anything that check cannot prove valid goes to jsonschema, so the verdict is
always jsonschema's.

jsonschema itself (with attrs, referencing and rpds: ~40 ms of CPU to import) is loaded the first
time a check cannot prove arguments valid, not when a validator is made: a worker compiles one per
tool before it is ready, and most tools' arguments never need it (issue 17, fast restarts).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from schemas.codec import decode_json, encode
from schemas.wire import JsonSchema

if TYPE_CHECKING:
    import jsonschema

_VALIDATOR_CACHE_SIZE = 4096
"""Compiled validators kept per process; one per (tool, version) in practice."""
MAX_REPORTED_PROBLEMS = 10
"""Problems named in one refusal; past it the message ends "and N more" (a model fixing its
call needs every mistake at once, not a wall of text when it sent something else entirely)."""
_ANNOTATIONS = frozenset({"description", "title", "examples", "default", "$comment"})
"""Keywords that never change a verdict."""

Check = Callable[[Any], bool]


class ArgumentValidator:
    """A tool's compiled inputSchema: ``problem(arguments)`` says what is wrong, or None."""

    def __init__(self, schema: JsonSchema) -> None:
        self._schema = schema
        self._compiled: jsonschema.Draft202012Validator | None = None
        self._surely_valid = _object_check(schema)

    @property
    def _jsonschema(self) -> jsonschema.Draft202012Validator:
        """jsonschema's validator of the schema, made on first use (two threads racing make two
        equal ones; either serves)."""
        if self._compiled is None:
            import jsonschema

            self._compiled = jsonschema.Draft202012Validator(self._schema)
        return self._compiled

    def is_valid(self, arguments: Any) -> bool:
        """True when the arguments fit the schema."""
        return self.problem(arguments) is None

    def problem(self, arguments: Any) -> str | None:
        """A message naming every offending field and why (see ``join_problems``), or None when
        the arguments fit."""
        if not isinstance(arguments, dict):
            return f"arguments must be a JSON object, got {type(arguments).__name__}"
        if self._surely_valid is not None and self._surely_valid(arguments):
            return None
        problems = [text for error in self._jsonschema.iter_errors(arguments) for text in _describe(error)]
        return join_problems(problems) if problems else None

    def error(self, value: Any) -> jsonschema.ValidationError | None:
        """jsonschema's most relevant error for any JSON ``value`` (e.g. a tool's result), or None.

        The quick check answers first when it can prove an object valid.
        """
        if self._surely_valid is not None and isinstance(value, dict) and self._surely_valid(value):
            return None
        from jsonschema.exceptions import best_match

        return best_match(self._jsonschema.iter_errors(value))


@lru_cache(maxsize=_VALIDATOR_CACHE_SIZE)
def _compiled(schema_json: bytes) -> ArgumentValidator:
    return ArgumentValidator(decode_json(schema_json))


def compile_validator(schema: JsonSchema) -> ArgumentValidator:
    """The compiled validator of ``schema`` (cached by the schema's content)."""
    return _compiled(encode(schema))


def argument_problem(validator: ArgumentValidator, arguments: Any) -> str | None:
    """A message naming the offending field and why, or None when the arguments fit."""
    return validator.problem(arguments)


def invalid_arguments_message(problem: str, tool: str | None = None) -> str:
    """How every role words arguments that do not fit: ``invalid arguments[ for tool 'x']: <problem>``.

    The gateway names the tool (its client may have several calls going); a worker, and a guest's
    own binding of the arguments, answer for the one tool they were called as.
    """
    where = "" if tool is None else f" for tool {tool!r}"
    return f"invalid arguments{where}: {problem}"


def join_problems(problems: list[str]) -> str:
    """Every problem (``"path: why"``) in one message: sorted, so the same mistakes read the same
    whichever order the schema lists them in; repeats dropped; capped at
    ``MAX_REPORTED_PROBLEMS`` with "and N more"."""
    unique = sorted(set(problems))
    shown = "; ".join(unique[:MAX_REPORTED_PROBLEMS])
    hidden = len(unique) - MAX_REPORTED_PROBLEMS
    return f"{shown}; and {hidden} more" if hidden > 0 else shown


def _describe(error: jsonschema.ValidationError) -> list[str]:
    """What one of jsonschema's top-level errors says, one text per offending field.

    ``best_match`` of the one error descends into its ``anyOf``/``oneOf`` context to the most
    relevant branch, as it did when only the first error was reported.
    """
    from jsonschema.exceptions import best_match

    error = best_match([error]) or error
    where = _field_path(error.absolute_path)
    if error.validator == "required" and error.validator_value:
        # jsonschema reports a missing property at its parent; name the property itself.
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        if missing:
            return [f"{'.'.join(filter(None, [where, str(name)]))}: required argument is missing" for name in missing]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return [f"{'.'.join(filter(None, [where, name]))}: unexpected argument" for name in extra]
    return [f"{where or '(arguments)'}: {error.message}"]


def _field_path(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- the fast "surely valid" checks ---------------------------------------------------------
def _object_check(schema: Any) -> Check | None:
    """A check for ``{"type": "object", "properties": {…}}`` of simple values, or None."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    if not set(schema) <= {"type", "properties", "required", "additionalProperties"} | _ANNOTATIONS:
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    closed = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list) or closed not in (True, False):
        return None
    checks = {name: _value_check(sub) for name, sub in properties.items()}
    if any(check is None for check in checks.values()):
        return None
    known: dict[str, Check] = {name: check for name, check in checks.items() if check is not None}
    needed = frozenset(required)

    def surely_valid(value: dict[str, Any]) -> bool:
        if not needed <= value.keys():
            return False
        for key, item in value.items():
            check = known.get(key)
            if check is None:
                if not closed:
                    return False
            elif not check(item):
                return False
        return True

    return surely_valid


def _value_check(schema: Any) -> Check | None:
    """A check for one scalar schema (bounded integer, number, string, boolean, string enum)."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    rest = set(schema) - _ANNOTATIONS - {"type"}
    if kind == "boolean" and not rest:
        return lambda v: v is True or v is False
    if kind in ("integer", "number") and rest <= {"minimum", "maximum"}:
        low, high = schema.get("minimum"), schema.get("maximum")
        # Exact types only: jsonschema also accepts 3.0 as an integer; that case goes to it.
        types = (int,) if kind == "integer" else (int, float)
        if not all(b is None or type(b) in (int, float) for b in (low, high)):
            return None
        return lambda v: (
            type(v) in types and (low is None or v >= low) and (high is None or v <= high) and v == v  # not NaN
        )
    if kind == "string" and rest <= {"minLength", "maxLength", "enum"}:
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
        allowed = schema.get("enum")
        if allowed is not None and not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
            return None
        choices = frozenset(allowed) if allowed is not None else None
        return lambda v: (
            type(v) is str
            and (choices is None or v in choices)
            and len(v) >= shortest
            and (longest is None or len(v) <= longest)
        )
    return None
