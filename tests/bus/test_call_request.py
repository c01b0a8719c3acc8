"""``bus.call_request``: the one place a tool call's subject, headers and request id are built."""

from __future__ import annotations

import time

import pytest

from bus.call_request import MAX_CACHED_SUBJECTS, CallRequests, new_request_id
from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects

SIGNER = PrincipalSigner("call-request-test-key")


def test_a_plain_request_carries_an_id_and_a_deadline_only() -> None:
    before_ms = time.time() * 1000
    request = CallRequests(Subjects("p")).build("calc_add", b'{"a":1}', timeout_s=5)
    assert request.subject == "p.call.calc_add"
    assert request.body == b'{"a":1}'
    assert set(request.headers) == {Header.REQUEST_ID, Header.DEADLINE_MS}
    assert request.headers[Header.REQUEST_ID] == request.request_id
    assert before_ms + 4000 < int(request.headers[Header.DEADLINE_MS]) < time.time() * 1000 + 5000 + 1


def test_era_traceparent_and_a_given_id_travel() -> None:
    request = CallRequests(Subjects()).build(
        "calc_add", b"{}", timeout_s=5, era="2026-07-28", request_id="r1", traceparent="00-ab-cd-01"
    )
    assert request.request_id == "r1"
    assert request.headers == {
        Header.REQUEST_ID: "r1",
        Header.DEADLINE_MS: request.headers[Header.DEADLINE_MS],
        Header.ERA: "2026-07-28",
        Header.TRACEPARENT: "00-ab-cd-01",
    }


def test_a_principal_travels_only_signed() -> None:
    subjects = Subjects()
    unsigned = CallRequests(subjects).build("calc_add", b"{}", timeout_s=5, principal="alice")
    assert Header.PRINCIPAL not in unsigned.headers
    signed = CallRequests(subjects, SIGNER).build("calc_add", b"{}", timeout_s=5, principal="alice")
    assert SIGNER.verified(signed.headers, signed.subject, signed.body) == "alice"
    assert SIGNER.verified(signed.headers, signed.subject, b"{ }") is None


def test_request_ids_are_unique_subject_tokens() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        Subjects().cancel(request_id)  # raises for anything that is not a token


def test_a_bad_tool_name_is_refused_and_the_subject_cache_stays_bounded() -> None:
    requests = CallRequests(Subjects())
    with pytest.raises(ValueError, match="not a valid subject token"):
        requests.build("no.dots", b"{}", timeout_s=5)
    for index in range(MAX_CACHED_SUBJECTS + 10):
        assert requests.subject(f"t{index}") == f"toolbus.call.t{index}"
    assert len(requests._call_subjects) == MAX_CACHED_SUBJECTS
