"""Guests' questions to the MCP client, as the tool service sees them (no MCP framework here).

A worker may answer a call with a *question* instead of a result (``gateway.calls.Question``,
``workers.conversation``): requests (``elicitation/create``, ``sampling/createMessage``,
``roots/list``) its guest waits on. ``gateway.tool_service`` asks the call's ``Asker`` for the
answers and resumes the guest with them (``ToolCaller.resume``) until the call has a result. The
askers of each protocol era, and how the 2026-07-28 state is sealed, are in ``gateway.askers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.calls import Question
from schemas.codec import DecodeError, decode_json, encode
from schemas.wire import GuestAnswer


class InputRequired(Exception):
    """2026-07-28: the guest waits for answers the client has not sent; the round ends with an
    ``input_required`` result (``gateway.server``). ``request_id`` is set by the tool service."""

    def __init__(self, question: Question, requests: dict[str, Any]) -> None:
        super().__init__("input required")
        self.question = question
        self.requests = requests
        """The question's requests as the front end sends them (the SDK's ``InputRequests``)."""
        self.request_id = ""


class Asker:
    """Gets the answers to a guest's questions for one call; ``capabilities`` is what the client declared."""

    capabilities: frozenset[str] = frozenset()

    async def answer(self, question: Question) -> GuestAnswer:
        """The answers (or why there are none) to resume the guest with.

        Raises:
            InputRequired: 2026-07-28, the client must answer by calling again.
        """
        return GuestAnswer(question.suspension, error="unsupported", message="this call cannot ask its client")


@dataclass(frozen=True)
class RoundState:
    """What a 2026-07-28 ``requestState`` holds (sealed and verified by the SDK's boundary)."""

    question: Question
    request_id: str
    """The call's request id, kept across rounds: a cancel names the guest's call."""

    def encode(self) -> str:
        q = self.question
        return encode({"w": q.worker, "s": q.suspension, "r": self.request_id, "q": q.requests}).decode()

    @classmethod
    def decode(cls, text: str) -> RoundState:
        """The state a verified ``requestState`` names.

        Raises:
            ValueError: not one this gateway minted (cannot happen past the boundary; kept fail-closed).
        """
        try:
            value = decode_json(text.encode())
        except DecodeError as exc:
            raise ValueError("requestState is not ours") from exc
        if not isinstance(value, dict):
            raise ValueError("requestState is not ours")
        worker, suspension, request_id, requests = value.get("w"), value.get("s"), value.get("r"), value.get("q")
        if not (isinstance(worker, str) and isinstance(suspension, str) and isinstance(request_id, str)):
            raise ValueError("requestState is not ours")
        if not isinstance(requests, dict):
            raise ValueError("requestState is not ours")
        return cls(Question(worker, suspension, requests), request_id)


@dataclass(frozen=True)
class ReplayState:
    """What a 2026-07-28 ``requestState`` holds for a request whose guest is re-run rather than
    suspended (``prompts/get``; ``workers.sandbox.replay``): the answers so far, and the question
    pending. Sealed and verified by the SDK's boundary like ``RoundState``."""

    rounds: list[dict[str, Any]]
    pending: dict[str, Any]

    def encode(self) -> str:
        return encode({"replay": self.rounds, "q": self.pending}).decode()

    @classmethod
    def decode(cls, text: str) -> ReplayState:
        """The state a verified ``requestState`` names.

        Raises:
            ValueError: not one minted for a re-run (a call's state sent to prompts/get, say).
        """
        try:
            value = decode_json(text.encode())
        except DecodeError as exc:
            raise ValueError("requestState is not ours") from exc
        rounds = value.get("replay") if isinstance(value, dict) else None
        pending = value.get("q") if isinstance(value, dict) else None
        if not (isinstance(rounds, list) and all(isinstance(r, dict) for r in rounds) and isinstance(pending, dict)):
            raise ValueError("requestState is not ours")
        return cls(rounds, pending)
