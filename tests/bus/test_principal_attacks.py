"""Attack the principal signature check (``bus.principal.PrincipalSigner.verified``) with odd expiries.

Every worker, surface and the registry's task desk call ``verified`` on each request's headers
before anything else, outside their own error handlers: an expiry that passes ``str.isdigit`` but
not ``int`` (a superscript digit), or one of more digits than ``int`` converts, must make the
signature invalid (``None``), never raise (a raise left the call unanswered until its deadline).
"""

from __future__ import annotations

import time

import pytest

from bus.principal import PrincipalSigner
from bus.subjects import Header

KEY = "k" * 32


@pytest.mark.parametrize(
    "expiry",
    ["²", "9²", "¹²³⁴", "١٢٣٤٥٦٧٨٩٠١٢٣", "9" * 5000, "", "-1", "+9", " 9", "9.5", "0x10", "1_000"],
)
def test_an_odd_expiry_is_an_invalid_signature_not_an_error(expiry: str) -> None:
    signer = PrincipalSigner(KEY)
    headers = {Header.REQUEST_ID: "r1"}
    signer.stamp(headers, "key:alice", subject="toolbus.call.kit_add", body=b"{}", valid_for_s=30)
    _, _, mac = headers[Header.PRINCIPAL_SIGNATURE].partition(".")
    headers[Header.PRINCIPAL_SIGNATURE] = f"{expiry}.{mac}"
    assert signer.verified(headers, "toolbus.call.kit_add", b"{}") is None


def test_a_good_signature_still_verifies() -> None:
    signer = PrincipalSigner(KEY)
    headers = {Header.REQUEST_ID: "r1"}
    signer.stamp(headers, "key:alice", subject="s", body=b"{}", valid_for_s=30)
    assert signer.verified(headers, "s", b"{}") == "key:alice"
    expires_ms = int(headers[Header.PRINCIPAL_SIGNATURE].partition(".")[0])
    assert expires_ms / 1000 > time.time()
