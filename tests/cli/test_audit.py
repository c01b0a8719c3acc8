"""``toolbus audit``'s one line per event (``cli.audit.summary``)."""

from __future__ import annotations

import json

from cli.audit import summary
from schemas.codec import encode
from schemas.wire import ConsoleActionEvent


def test_a_console_action_reads_as_who_did_what_to_what() -> None:
    event = ConsoleActionEvent(
        action="rollback", principal="key:ops", target="calc 1.0.0", outcome="refused", at=1.0, detail="no such alias"
    )
    line = summary("toolbus.audit.console.rollback", json.loads(encode(event)), "toolbus")
    assert line == "console rollback calc 1.0.0 → refused principal=key:ops 'no such alias'"
