"""``workers.sandbox.replay``: a re-run guest's questions answered from earlier rounds, in order,
or the run stopped at the first one nobody answered (no sandbox needed: the asker alone)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.wire import MAX_ASK_ROUNDS
from workers.sandbox.call_context import AskFailed
from workers.sandbox.replay import Replay, Unanswered

ELICIT = {"method": "elicitation/create", "params": {"message": "?", "requestedSchema": {"type": "object"}}}
YES = {"action": "accept", "content": {"ok": True}}
NO = {"action": "decline"}


def ask(replay: Replay, *keys: str) -> dict[str, Any]:
    return replay.ask({key: ELICIT for key in keys})


def test_the_nth_question_gets_the_nth_round_and_the_next_one_stops_the_run() -> None:
    replay = Replay([{"elicitation": YES}, {"elicitation": NO}], frozenset({"elicitation"}))
    # The same key twice: each round answers one question, in order (not the first answer twice).
    assert ask(replay, "elicitation") == {"elicitation": YES}
    assert ask(replay, "elicitation") == {"elicitation": NO}
    with pytest.raises(Unanswered):
        ask(replay, "a", "b")
    assert replay.pending == {"a": ELICIT, "b": ELICIT} and replay.asked == 2


def test_a_round_answering_other_keys_is_dropped_with_every_later_one() -> None:
    replay = Replay([{"other": YES}, {"elicitation": YES}], frozenset({"elicitation"}))
    with pytest.raises(Unanswered):
        ask(replay, "elicitation")
    # The guest asked something else this time: the stale rounds are gone, nothing is replayed out of order.
    assert replay.rounds == [] and replay.asked == 0


def test_a_partial_round_does_not_answer_a_question_of_more_keys() -> None:
    replay = Replay([{"a": YES}], frozenset({"elicitation"}))
    with pytest.raises(Unanswered):
        ask(replay, "a", "b")


def test_a_capability_the_client_did_not_declare_is_unsupported_not_pending() -> None:
    replay = Replay([], frozenset({"sampling"}))
    with pytest.raises(AskFailed) as failed:
        ask(replay, "elicitation")
    assert (failed.value.kind, failed.value.message, replay.pending) == ("unsupported", "elicitation", None)


def test_a_guest_asking_past_the_round_limit_is_told_failed() -> None:
    replay = Replay([{"elicitation": YES}] * MAX_ASK_ROUNDS, frozenset({"elicitation"}))
    for _ in range(MAX_ASK_ROUNDS):
        ask(replay, "elicitation")
    with pytest.raises(AskFailed) as failed:
        ask(replay, "elicitation")
    assert failed.value.kind == "failed" and replay.pending is None
