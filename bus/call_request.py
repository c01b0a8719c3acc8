"""A tool call as a request on the bus: its subject, headers and request id, built in one place.

The gateway (``gateway.calls.ToolCaller``), ``toolbus call`` and the bench all put calls on the
bus. Built here, the three cannot drift apart: each request carries the same request id scheme,
the absolute deadline a worker gives up at, the era when the caller has one, and a principal only
with its signature (``bus.principal``). Header and subject names stay spelled in
``bus.subjects`` alone; this module only decides which of them a call carries.

The gateway builds one request per ``tools/call``, so ``CallRequests.build`` does no more than
the gateway did inline before: one headers dict, one small Struct, and a tool's subject built
once and then looked up (``Subjects.call`` checks the name against a pattern each time).
"""

from __future__ import annotations

import time
from typing import Final

import msgspec
from nats.nuid import NUID

from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects

MAX_CACHED_SUBJECTS: Final = 4096
"""Tools whose call subject a builder keeps: a large catalogue's worth. A caller naming more
(anything can be asked for by name) gets the rest built per call, so memory stays bounded."""

_IDS: Final = NUID()
"""The one source of request ids. NUID, not uuid4: unique, a subject token, a fraction of the cost."""


def new_request_id() -> str:
    """A fresh request id: unique, and a subject token (it names the call's cancel subject).

    Call it from the event loop only: a NUID is not safe to share between threads.
    """
    return _IDS.next().decode()


class CallRequest(msgspec.Struct, frozen=True):
    """One tool call ready to send: ``nc.request(subject, body, headers=headers, timeout=...)``.

    A caller may add headers of its own before sending (the gateway names its events inbox);
    the signature does not cover them, only the subject, request id, principal and body.
    """

    subject: str
    body: bytes
    """The JSON arguments, exactly as signed."""
    headers: dict[str, str]
    request_id: str
    """Also in ``headers``; the caller needs it to publish the call's cancel."""


class CallRequests:
    """Builds the call requests of one deployment, signing principals when it has a signer."""

    def __init__(self, subjects: Subjects, signer: PrincipalSigner | None = None) -> None:
        self._subjects = subjects
        self._signer = signer
        self._call_subjects: dict[str, str] = {}
        """Tool name → its call subject: a dict lookup per call instead of a pattern match and a new string."""

    def subject(self, tool: str) -> str:
        """The subject a call to ``tool`` is requested on.

        Raises:
            ValueError: ``tool`` is not a valid tool name.
        """
        subject = self._call_subjects.get(tool)
        if subject is None:
            subject = self._subjects.call(tool)
            if len(self._call_subjects) < MAX_CACHED_SUBJECTS:
                self._call_subjects[tool] = subject
        return subject

    def build(
        self,
        tool: str,
        body: bytes,
        *,
        timeout_s: float,
        era: str | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
        principal: str | None = None,
        subject: str | None = None,
    ) -> CallRequest:
        """The request calling ``tool`` with the JSON ``body``; its deadline is ``timeout_s`` from now.

        ``subject`` replaces the tool's call subject: a resume (``Subjects.resume``) is built and
        signed exactly like the call it continues.

        ``request_id`` must be a subject token; by default a fresh one. ``era`` and a non-empty
        ``traceparent`` travel when given; ``principal`` travels only signed, so a builder
        without a signer leaves it out (an unsigned principal would be ignored anyway).

        Raises:
            ValueError: ``tool`` is not a valid tool name.
        """
        return self._request(subject or self.subject(tool), body, timeout_s, era, request_id, traceparent, principal)

    def surface(self, component: str, body: bytes, *, timeout_s: float, principal: str | None = None) -> CallRequest:
        """A resource read, prompt get or completion (``SurfaceRequest`` JSON ``body``) for
        ``component``, with the same request id, deadline and signed principal as a call.

        Raises:
            ValueError: ``component`` is not a subject token.
        """
        return self._request(self._subjects.surface(component), body, timeout_s, None, None, None, principal)

    def _request(
        self,
        subject: str,
        body: bytes,
        timeout_s: float,
        era: str | None,
        request_id: str | None,
        traceparent: str | None,
        principal: str | None,
    ) -> CallRequest:
        request_id = request_id or new_request_id()
        headers = {
            Header.REQUEST_ID: request_id,
            Header.DEADLINE_MS: str(int((time.time() + timeout_s) * 1000)),
        }
        if era is not None:
            headers[Header.ERA] = era
        if traceparent:
            headers[Header.TRACEPARENT] = traceparent
        if principal is not None and self._signer is not None:
            # A call's signature expires with its deadline: nobody should act on it after that.
            self._signer.stamp(headers, principal, subject=subject, body=body, valid_for_s=timeout_s)
        return CallRequest(subject, body, headers, request_id)
