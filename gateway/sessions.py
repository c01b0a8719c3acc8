"""2025-era sessions belong to the principal that opened them, and each principal has a fair share.

The SDK's session manager keeps sessions in memory, up to ``max_sessions`` for the whole gateway,
and would let anyone holding a session id use it. The front door asks this module first:

- **ownership**: the ``initialize`` that opens a session binds its id (read from the answer's
  ``Mcp-Session-Id``) to the principal; any other principal naming that id — POST, GET or DELETE,
  on the hot path or the SDK's — is told 404 ``Session not found``, word for word what the SDK
  answers for a session that does not exist, so an id's existence is not revealed either;
- **open sessions per principal** (``max_sessions_per_principal``): an ``initialize`` beyond it
  gets 429, so one principal cannot fill the gateway's table and shut every other one out;
- **initialize rate per principal** (``initializes_per_minute``): a sliding minute; beyond it 429.

A binding is dropped when the SDK no longer has the session (DELETE, idle timeout, crash): the
count of a principal's sessions asks the session manager which are still alive.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

OPEN_SESSIONS_LIMIT: Final = 10_000
"""Bindings kept at most (the SDK's own session limit): past it, dead ones are swept first."""
RATE_WINDOW_S: Final = 60.0


class SessionOwners:
    """Who opened each live 2025-era session, and how many each principal holds."""

    def __init__(
        self,
        *,
        alive: Callable[[str], bool],
        max_per_principal: int,
        initializes_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._alive = alive
        """Asks the SDK's session manager whether a session id is still open."""
        self._max_per_principal = max_per_principal
        self._rate = initializes_per_minute
        self._clock = clock
        self._owner: dict[str, str] = {}
        self._by_principal: dict[str, set[str]] = {}
        self._initializes: dict[str, deque[float]] = {}

    def owner(self, session_id: str) -> str | None:
        """The principal that opened the session, or ``None`` when it is not one of ours (or gone)."""
        owner = self._owner.get(session_id)
        if owner is not None and not self._alive(session_id):
            self._forget(session_id)
            return None
        return owner

    def admit(self, principal: str) -> str | None:
        """``None`` when ``principal`` may open another session, else why not (for the 429)."""
        now = self._clock()
        times = self._initializes.get(principal)
        if times is None:
            if len(self._initializes) >= OPEN_SESSIONS_LIMIT:
                self._sweep_rates(now)
            times = self._initializes[principal] = deque()
        while times and now - times[0] >= RATE_WINDOW_S:
            times.popleft()
        if len(times) >= self._rate:
            return f"more than {self._rate} initialize requests in a minute"
        times.append(now)
        held = self._by_principal.get(principal)
        if held is not None and len(held) >= self._max_per_principal:
            for session_id in [s for s in held if not self._alive(s)]:
                self._forget(session_id)
            if len(held) >= self._max_per_principal:
                return f"{len(held)} sessions open; close one (DELETE) before opening another"
        return None

    def bind(self, session_id: str, principal: str) -> None:
        """The SDK opened ``session_id`` for ``principal``."""
        if len(self._owner) >= OPEN_SESSIONS_LIMIT:
            for dead in [s for s in self._owner if not self._alive(s)]:
                self._forget(dead)
        self._owner[session_id] = principal
        self._by_principal.setdefault(principal, set()).add(session_id)

    def _forget(self, session_id: str) -> None:
        principal = self._owner.pop(session_id, None)
        if principal is None:
            return
        held = self._by_principal.get(principal)
        if held is not None:
            held.discard(session_id)
            if not held:
                del self._by_principal[principal]

    def _sweep_rates(self, now: float) -> None:
        for principal in [p for p, times in self._initializes.items() if not times or now - times[-1] >= RATE_WINDOW_S]:
            del self._initializes[principal]
