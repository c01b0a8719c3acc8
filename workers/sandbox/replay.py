"""Asking by re-running: a guest's questions answered from earlier rounds, or the run stopped.

The suspended-guest way of asking (``workers.conversation``) holds a thread, a worker slot and
the caller's connection while the client thinks. Where nothing may wait — a durable task (no
client connection; the user may take hours; its worker may die) and a prompt (a short render) —
the guest is re-run from the start instead, as SEP-2322's stateless servers do:

- ``rounds`` are the answers of the questions the guest asked in earlier runs, in order. The
  guest's n-th question is answered from round n when that round answers every key it asks
  (a deterministic guest asks the same questions again on each run);
- the first question no round answers stops the run: ``Replay.ask`` records it in ``pending``
  and raises ``Unanswered``, which traps the guest (never caught by it: it is no ``ask-error``).
  The caller sees ``pending`` set and turns the run into ``input_required`` (the task's record,
  the prompt's ``InputRequiredResult``); the answers come back as one more round on the next run.

So waiting costs nothing but the record; the price is that the guest's work before its question
is done again on every run (guests that ask should ask first).
"""

from __future__ import annotations

from typing import Any, Final

from schemas.codec import encode
from schemas.wire import MAX_ASK_ROUNDS
from workers.sandbox.call_context import AskFailed
from workers.sandbox.client_host import capability_needed

MAX_QUESTION_BYTES: Final = 256 * 1024
"""The largest question (its JSON) a re-run guest may ask. A task keeps it in its record, one KV
value (one NATS message) beside its answers and earlier rounds; a larger one could not be parked
and its run was delivered again until ``max_deliver``. A guest asking more is told so (its ask fails)."""


class Unanswered(Exception):
    """Raised in a guest's ask (a trap) when no earlier round answers its question."""


class Replay:
    """The ``Asker`` of one replayed run (``CallContext.asker``); ``pending`` is set when it stopped the guest."""

    def __init__(self, rounds: list[dict[str, Any]], capabilities: frozenset[str]) -> None:
        self.rounds = rounds
        self.capabilities = capabilities
        self.asked = 0
        """Questions answered so far in this run."""
        self.pending: dict[str, dict[str, Any]] | None = None
        """The question that stopped the run (key → ``{"method", "params"}``), or None."""

    def ask(self, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Answer from the next round, or stop the guest (``Unanswered``).

        Raises:
            AskFailed: the client cannot answer (a capability it did not declare; too many rounds).
            Unanswered: no round answers it: the run ends ``input_required``.
        """
        size = len(encode(requests))
        if size > MAX_QUESTION_BYTES:
            raise AskFailed("failed", f"a question may hold at most {MAX_QUESTION_BYTES} bytes here ({size} asked)")
        for request in requests.values():
            capability = capability_needed(request)
            if capability not in self.capabilities:
                raise AskFailed("unsupported", capability)
        if self.asked < len(self.rounds):
            answers = self.rounds[self.asked]
            if requests.keys() <= answers.keys():
                self.asked += 1
                return {key: answers[key] for key in requests}
            # The guest asked something else this time: its later rounds no longer apply.
            del self.rounds[self.asked :]
        if self.asked >= MAX_ASK_ROUNDS:
            raise AskFailed("failed", f"a guest may ask its client at most {MAX_ASK_ROUNDS} times here")
        self.pending = requests
        raise Unanswered("the guest waits for its client's answer")
