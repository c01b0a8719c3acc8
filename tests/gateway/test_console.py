"""The operator's web console (``gateway.console``) against a real registry, real workers (the
testkit WAT component, and one that follows the packages bucket), real NATS, and — for the flow
an operator walks through — Debian's chromium driven by Playwright.

Set ``TOOLBUS_CONSOLE_SCREENSHOTS=DIR`` to keep the browser test's screenshots (docs/console*.png).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx2
import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from playwright.async_api import Dialog, async_playwright

from bus.embedded import EmbeddedNatsServer
from bus.registry_requests import release as request_release
from bus.subjects import Subjects
from gateway.console.access import CSRF_FIELD, OPERATOR_SCOPE, csrf_token
from harness.apt import ensure_binary
from schemas.codec import encode
from schemas.config import Settings, WorkerSettings
from schemas.wire import PublishRequest, ReleaseReply, ReleaseRequest
from stores import PackageStore
from tests.conftest import TEST_ANNOUNCE_INTERVAL_S, answer_component, start_package_worker, task_reaches
from tests.gateway.auth_kit import API_KEY, Issuer, client
from tests.gateway.responders import RunningGateway, TaskSystem
from workers.sandbox.engine import EngineHost

OPERATOR_KEY = "tbk_op_9d8c7b6a5f4e3d2c1b0a99887766554433"
KEYS = {
    "ci-bot": {"sha256": hashlib.sha256(API_KEY.encode()).hexdigest(), "scopes": ["mcp:tools"]},
    "ops": {"sha256": hashlib.sha256(OPERATOR_KEY.encode()).hexdigest(), "scopes": ["mcp:tools", OPERATOR_SCOPE]},
}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 15_000


async def publish(nc: NatsClient, subjects: Subjects, name: str, version: str, wasm: bytes) -> ReleaseReply:
    """``toolbus publish``'s two steps: the artifact into the store, then the registry's publish verb."""
    digest = await (await PackageStore.open(nc, subjects)).put_artifact(wasm)
    request = PublishRequest(name=name, version=version, digest=digest, aliases=["latest"])
    return await request_release(nc, subjects.registry_release("publish"), encode(request))


@pytest.fixture
async def console(task_system: TaskSystem, secured: Callable[..., Awaitable[RunningGateway]]) -> RunningGateway:
    """A gateway whose API keys are ``ci-bot`` (no operator) and ``ops`` (an operator)."""
    return await secured(api_keys=KEYS)


@pytest.fixture
async def package_worker(
    nats_server: EmbeddedNatsServer, subjects: Subjects, engine_host: EngineHost, cache_dir: Path
) -> AsyncIterator[None]:
    """A worker that serves published packages (and loads them for the registry at publish time)."""
    settings = Settings(
        cache_dir=cache_dir, worker=WorkerSettings(concurrency=2, announce_interval_s=TEST_ANNOUNCE_INTERVAL_S)
    )
    service, follower, worker_nc = await start_package_worker(nats_server.url, subjects, engine_host, settings)
    yield
    await follower.stop()
    await service.stop(grace_s=0.5)
    await worker_nc.close()


async def test_only_an_operator_gets_in_and_every_action_needs_the_csrf_token(
    console: RunningGateway, task_system: TaskSystem, issuer: Issuer
) -> None:
    base = console.base_url + "/console/"
    async with httpx2.AsyncClient(timeout=10) as http:
        anonymous = await http.get(base)
        assert anonymous.status_code == 401 and 'name="key"' in anonymous.text  # the sign-in form
        assert (await http.get(base + "part/tools")).status_code == 401
        assert (await http.get(base + "events")).status_code == 401
        wrong = await http.get(base, headers={"Authorization": "Bearer tbk_not_a_key"})
        assert wrong.status_code == 401
        bot = {"Authorization": f"Bearer {API_KEY}"}
        refused = await http.get(base, headers=bot)
        assert refused.status_code == 403 and "key:ci-bot lacks the scope toolbus:operator" in refused.text
        assert (await http.get(base + "part/tasks", headers=bot)).status_code == 403
        # OAuth: the scope in the token decides, as for an API key.
        user = {"Authorization": f"Bearer {issuer.token(sub='ops')}"}
        assert (await http.get(base, headers=user)).status_code == 403
        ops_token = {"Authorization": f"Bearer {issuer.token(sub='ops', scope='mcp:tools ' + OPERATOR_SCOPE)}"}
        assert (await http.get(base + "part/tools", headers=ops_token)).status_code == 200
        # A non-operator's sign-in sets no cookie.
        signed = await http.post(base + "login", data={"key": API_KEY})
        assert signed.status_code == 403 and "set-cookie" not in signed.headers
        # Its task, which the operator will try to cancel without the form's token.
        task = await task_system.store.submit("kit_danger_spin", {}, principal="key:ci-bot")
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        page = await http.get(base, headers=operator)
        assert page.status_code == 200 and "kit_add" in page.text and task.task_id in page.text
        for form in ({}, {CSRF_FIELD: "forged"}, {CSRF_FIELD: csrf_token(API_KEY)}):
            forged = await http.post(base + "tasks/cancel", headers=operator, data={"task_id": task.task_id, **form})
            assert forged.status_code == 403 and "CSRF" in forged.text
        assert (await task_system.store.get(task.task_id)).status == "working"
        # Odd input: an unknown task, an unknown verb, a package nobody published: refused, page served.
        token = {CSRF_FIELD: csrf_token(OPERATOR_KEY)}
        unknown = await http.post(base + "tasks/cancel", headers=operator, data={"task_id": "../x", **token})
        assert unknown.status_code == 409 and "cancel refused" in unknown.text
        bad_verb = await http.post(base + "packages/publish", headers=operator, data=token)
        assert bad_verb.status_code == 404
        nothing = await http.post(
            base + "packages/rollback", headers=operator, data={"name": "nope", "version": "1.0.0", **token}
        )
        assert nothing.status_code == 409 and "rollback refused" in nothing.text and "not published" in nothing.text
        odd_name = await http.post(
            base + "packages/retire", headers=operator, data={"name": "a.b>*", "version": "", **token}
        )
        assert odd_name.status_code == 409 and "retire refused" in odd_name.text
        # What the page shows of input is escaped (the audit tail is written as text by the script).
        xss = await http.get(base, headers=operator, params={"package": "<img src=x onerror=alert(1)>"})
        assert xss.status_code == 200 and "<img src=x" not in xss.text and "&lt;img src=x" in xss.text
        cancelled = await http.post(base + "tasks/cancel", headers=operator, data={"task_id": task.task_id, **token})
        assert cancelled.status_code == 200 and f"cancelled task {task.task_id}" in cancelled.text
        # Another cancel of the same task: refused, it has ended.
        again = await http.post(base + "tasks/cancel", headers=operator, data={"task_id": task.task_id, **token})
        assert again.status_code == 409 and "had already ended" in again.text
    assert (await task_system.store.get(task.task_id)).status == "cancelled"


async def test_a_sign_in_is_an_http_only_strict_cookie_and_the_event_stream_ends_with_the_gateway(
    console: RunningGateway,
) -> None:
    base = console.base_url + "/console/"
    async with httpx2.AsyncClient(timeout=10) as http:
        signed = await http.post(base + "login", data={"key": OPERATOR_KEY})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"].lower()
        assert all(flag in cookie for flag in ("httponly", "samesite=strict", "path=/console"))
        assert "secure" not in cookie  # [auth] resource is http:// in this test; https:// sets Secure
        assert (await http.get(base)).status_code == 200  # the cookie is the credential now
        await http.post(base + "logout")
        assert (await http.get(base)).status_code == 401
        async with http.stream("GET", base + "events", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            chunks = events.aiter_raw()
            assert (await anext(chunks)).startswith(b"retry:")
            assert console.state.console is not None and console.state.console.feed.listening
            # A stopping gateway ends the stream (a complete response, not one cut off when
            # uvicorn's graceful period runs out).
            console.server.should_exit = True
            async for _ in chunks:
                pass


@pytest.mark.slow
async def test_an_operator_watches_a_publish_rolls_it_back_and_cancels_a_task_in_chromium(
    console: RunningGateway, task_system: TaskSystem, package_worker: None
) -> None:
    chromium = await asyncio.to_thread(ensure_binary, "chromium", ["chromium"])
    shots = os.environ.get("TOOLBUS_CONSOLE_SCREENSHOTS")
    nc, subjects = task_system.nc, task_system.subjects
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            await page.goto(console.base_url + "/console")
            # A non-operator key is refused at sign-in.
            await page.fill("#key", API_KEY)
            await page.click("#sign-in")
            assert "lacks the scope toolbus:operator" in await page.text_content("#message") or ""
            await page.goto(console.base_url + "/console/")
            await page.fill("#key", OPERATOR_KEY)
            await page.click("#sign-in")
            await page.wait_for_selector('tr[data-tool="kit_add"]')
            await page.wait_for_selector("#live.on")  # the event stream is open
            if shots:
                await page.screenshot(path=str(Path(shots) / "console-login.png"))

            # Published while the page is open: the tools appear without a reload.
            await publish(nc, subjects, "answer", "1.0.0", answer_component(1, extra_export="legacy"))
            await page.wait_for_selector('tr[data-tool="answer_legacy"]')
            await publish(nc, subjects, "answer", "2.0.0", answer_component(2, extra_export="fresh"))
            await page.wait_for_selector('tr[data-tool="answer_fresh"]')
            await page.wait_for_selector('tr[data-package="answer"][data-version="2.0.0"] .aliases:text("latest")')

            # Roll back through the release verb; the catalogue follows, the audit tail shows who.
            await page.click('tr[data-package="answer"][data-version="1.0.0"] button.rollback')
            assert "answer latest → 1.0.0" in (await page.text_content("#message") or "")
            assert page.url.endswith("/console/")  # a reload shows the page, it does not roll back again
            await page.wait_for_selector('tr[data-tool="answer_legacy"]')
            await page.wait_for_selector('tr[data-tool="answer_fresh"]', state="detached")
            rollback_event = await page.wait_for_selector('#audit-tail li[data-subject="audit.console.rollback"]')
            assert "key:ops" in (await rollback_event.text_content() or "")

            # Retire asks first (data-confirm, never inline script); dismissed, nothing is retired.
            asked: list[str] = []

            async def dismiss(dialog: Dialog) -> None:
                asked.append(dialog.message)
                await dialog.dismiss()

            page.once("dialog", dismiss)
            await page.click('tr[data-package="answer"][data-version="2.0.0"] button.retire')
            assert asked == ["Retire answer 2.0.0?"]
            assert await page.query_selector('tr[data-package="answer"][data-version="2.0.0"] button.retire')
            versions = await request_release(
                nc, subjects.registry_release("versions"), encode(ReleaseRequest(name="answer"))
            )
            assert {v.version: v.aliases for v in versions.versions}["1.0.0"] == ["latest"]

            # Another principal's task appears while it runs; the operator cancels it.
            task = await task_system.store.submit("kit_danger_spin", {}, principal="key:ci-bot")
            await task_reaches(task_system.store, task.task_id, "working", running=True)
            await page.wait_for_selector(f'tr[data-task="{task.task_id}"] button.cancel')
            # Calls through this gateway show in the rates (from its metrics, pushed every 2 s).
            async with client(console.url, OPERATOR_KEY) as mcp:
                for b in range(5):
                    await mcp.call_tool("kit_add", {"a": 1, "b": b})
            await page.wait_for_selector('#stats-rows td:text-is("kit_add")')
            if shots:
                await page.screenshot(path=str(Path(shots) / "console.png"), full_page=True)
            await page.click(f'tr[data-task="{task.task_id}"] button.cancel')
            assert f"cancelled task {task.task_id}" in (await page.text_content("#message") or "")
            cancel_event = await page.wait_for_selector('#audit-tail li[data-subject="audit.console.cancel"]')
            assert task.task_id in (await cancel_event.text_content() or "")
            assert (await task_system.store.get(task.task_id)).status == "cancelled"
            await page.wait_for_selector(f'tr[data-task="{task.task_id}"] td.state:text("cancelled")')
        finally:
            await browser.close()


# -- attacks kept as tests (lane F) ----------------------------------------------------------------


async def test_a_huge_form_is_refused_before_it_is_read_even_before_sign_in(console: RunningGateway) -> None:
    # /console/login reads its form before anyone is known, and the front door's body limit guards
    # only the MCP path: Starlette bounds each field to 1 MiB but takes 1000 of them (and files of
    # any size), so a form of ~1 GB used to be read into memory. Here 10 fields of 900 KiB.
    base = console.base_url + "/console/"
    huge = b"&".join(b"f%d=" % n + b"A" * (900 * 1024) for n in range(10)) + b"&key=x"

    async def trickle() -> AsyncIterator[bytes]:  # no Content-Length: chunked, counted as it comes
        for start in range(0, len(huge), 256 * 1024):
            yield huge[start : start + 256 * 1024]

    form = {"content-type": "application/x-www-form-urlencoded"}
    async with httpx2.AsyncClient(timeout=10) as http:
        announced = await http.post(base + "login", content=huge, headers=form)
        assert announced.status_code == 413 and "set-cookie" not in announced.headers
        chunked = await http.post(base + "login", content=trickle(), headers=form)
        assert chunked.status_code == 413
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}", **form}
        action = await http.post(base + "tasks/cancel", content=huge, headers=operator)
        assert action.status_code == 413
        # The gateway is fine, and a form of a normal size still signs in.
        assert (await http.post(base + "login", data={"key": OPERATOR_KEY})).status_code == 303


async def test_what_guests_and_principals_write_is_escaped_in_the_tasks_part(
    console: RunningGateway, task_system: TaskSystem
) -> None:
    # A task's status message is a guest's error text, its owner an OAuth subject: both reach the
    # operator's page (and its live refresh, which sets the part's HTML).
    xss = '<img src=x onerror=alert(1)>"><script>alert(2)</script>'
    task = await task_system.store.submit("kit_danger_spin", {}, principal=xss)
    await task_system.store.update(task.task_id, lambda r: msgspec.structs.replace(r, status_message=xss))
    async with httpx2.AsyncClient(timeout=10) as http:
        part = await http.get(
            console.base_url + "/console/part/tasks", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}
        )
    await task_system.store.cancel(task.task_id)
    assert part.status_code == 200 and task.task_id in part.text
    assert "<img" not in part.text and "<script>" not in part.text and "&lt;img src=x" in part.text
