"""Attack the principal signature from the gateway's side: a token whose subject the signature
cannot carry, in both eras, on the hot path and the SDK's; and the audit trail of a forged one.

The gateway signs each call's principal (``bus.principal``) over its UTF-8 bytes. A JSON Web
Token's ``sub`` may hold what UTF-8 cannot encode (``"\\ud800"``, a lone surrogate, is valid JSON)
or what a NATS header cannot carry (a line break). Such a call must fail closed: no worker sees it,
no traceback reaches the client, and the gateway goes on serving the next caller.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from registry.audit_stream import recent
from tests.conftest import eventually
from tests.gateway.auth_kit import Issuer, post_initialize
from tests.gateway.raw_mcp import ERAS, RawMcp
from tests.gateway.responders import TaskSystem, spying

ODD_SUBJECTS = {
    "lone surrogate": "\ud800",
    "surrogate pair halves reversed": "\udc00\ud800",
    "line break": "alice\r\nToolbus-Principal: admin",
    "bare line feed": "alice\nToolbus-Principal: admin",
    "longer than any issuer's": "a" * 2000,
    "huge": "a" * 100_000,  # refused sooner: the header is over the gateway's header limit (431)
}


@pytest.mark.parametrize("hot_path", [True, False])
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("case", list(ODD_SUBJECTS))
async def test_a_subject_a_signature_cannot_carry_reaches_no_worker(
    secured: Any, task_system: TaskSystem, issuer: Issuer, era: str, hot_path: bool, case: str
) -> None:
    gateway = await secured(gateway={"hot_path": hot_path})
    credential = {"Authorization": f"Bearer {issuer.token(sub=ODD_SUBJECTS[case])}"}
    async with spying(task_system, "kit_add") as added:
        if era == ERAS[0]:  # 2025-11-25: refused at the session's first request
            response = await post_initialize(gateway.url, credential)
        else:
            odd = RawMcp(gateway.url, era)
            response = await odd.post(odd.call_body("kit_add", {"a": 1, "b": 2}), tool="kit_add", **credential)
        if case == "huge":
            assert response.status_code == 431, response.text[:300]
        else:
            assert response.status_code == 401, response.text[:300]
            assert response.json()["error"] == "invalid_token"
    assert added == []
    # The gateway is whole: the next caller is served.
    plain = RawMcp(gateway.url, era, issuer.token())
    assert (await plain.call("kit_add", {"a": 1, "b": 2})).status_code == 200


async def test_a_forged_token_claiming_an_unencodable_subject_is_still_audited(
    secured: Any, issuer: Issuer, task_system: TaskSystem
) -> None:
    # The claimed subject of a token that fails verification goes into the audit trail; one the
    # trail could not encode was skipped, so a forger could keep refusals out of it.
    gateway = await secured()
    assert gateway.state.audit is not None
    marker = f"forger-{time.monotonic_ns()}"
    forged = issuer.token(sub=f"{marker}\ud800", aud="https://elsewhere.example/mcp")
    response = await post_initialize(gateway.url, {"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    gateway.state.audit.refusals.flush()

    async def refused() -> list[dict[str, Any]] | None:
        events = [body for _, _, body in await recent(task_system.nc, task_system.subjects, 1000)]
        mine = [e for e in events if str(e.get("subject", "")).startswith(marker)]
        return mine or None

    (event,) = await eventually(refused, timeout_s=10, what="the forged token's refusal never reached the stream")
    assert event["subject"] == f"{marker}\\ud800"
