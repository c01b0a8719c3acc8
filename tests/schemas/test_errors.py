"""The error-code table: the wire contract of typed error replies."""

from __future__ import annotations

from schemas.errors import ErrorCode


def test_every_error_code_is_unique() -> None:
    # An IntEnum folds a duplicate value into an alias of the first name: only __members__ shows it.
    values = [code.value for code in ErrorCode.__members__.values()]
    assert len(values) == len(set(values))
