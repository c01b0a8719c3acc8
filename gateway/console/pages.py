"""The console's routes: server-rendered pages, their parts, the live feed, and the actions.

Every route first asks ``access.operator_of``; a refusal is answered (401 with the sign-in form,
or 403) and goes to the audit trail like the MCP endpoint's refusals. Actions are POSTed forms
with the CSRF token; each goes through the same verb as the CLI (release verbs to the registry,
``TaskStore.cancel`` as ``tasks/cancel`` does) and is audited with the operator's principal,
whether it was done or refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, select_autoescape
from nats.aio.client import Client as NatsClient
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bus.errors import BusError
from bus.registry_requests import RegistryRefused
from bus.subjects import Subjects
from gateway.audit_trail import AuditTrail
from gateway.auth import Authenticator
from gateway.catalogue_mirror import CatalogueMirror
from gateway.console.access import (
    COOKIE,
    COOKIE_MAX_AGE_S,
    CSRF_FIELD,
    ConsoleRefused,
    csrf_ok,
    csrf_token,
    operator_of,
)
from gateway.console.live import LiveFeed
from gateway.console.registry_client import live_workers, release
from gateway.console.stats import CallRates
from gateway.principals import Principal
from schemas.wire import ConsoleActionEvent, ReleaseReply, ReleaseRequest
from stores import TaskStore
from stores.errors import TaskFinished, TaskNotFound

HERE: Final = Path(__file__).parent
MAX_TASKS_SHOWN: Final = 100
ACTIONS: Final = ("rollback", "deprecate", "retire")
PARTS: Final = ("tools", "packages", "workers", "tasks", "stats")
MAX_FORM_BYTES: Final = 64 * 1024
"""A console form holds a key, a CSRF token and a few names, far below this. The bound is ours
because the front door's body limit guards only the MCP path and the sign-in form is read before
anyone is known; Starlette alone takes 1000 fields of 1 MiB (and files of any size)."""

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), enable_async=False
)
_templates.filters["when"] = lambda unix_s: (
    datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if unix_s else "-"
)


@dataclass
class ConsoleParts:
    """What the console reads from the gateway it lives in (given by ``gateway.app`` at build time)."""

    subjects: Subjects
    catalogue: CatalogueMirror
    authenticator: Authenticator | None
    nats: Any
    """() → the gateway's NATS connection, or None before it is connected."""
    tasks: Any
    """() → the task store, or None before it is open."""
    audit: Any
    """() → the audit trail, or None before it is started."""
    rates: CallRates
    secure_cookie: bool


class Console:
    """The console of one gateway."""

    def __init__(self, parts: ConsoleParts) -> None:
        self.parts = parts
        self.feed = LiveFeed(parts.subjects, parts.catalogue, parts.rates.as_json)

    def routes(self) -> list[BaseRoute]:
        """The routes to mount at ``/console``."""
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/part/{name}", self.part, methods=["GET"]),
            Route("/packages/{verb}", self.package_action, methods=["POST"]),
            Route("/tasks/cancel", self.cancel_task, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="console-static"),
        ]

    # -- access ---------------------------------------------------------------------------------
    async def _operator(self, request: Request, credential: str | None = None) -> tuple[Principal, str] | Response:
        try:
            return await operator_of(self.parts.authenticator, request, credential)
        except ConsoleRefused as refused:
            audit: AuditTrail | None = self.parts.audit()
            if audit is not None:
                client = request.client
                audit.auth_failure(
                    refused.reason,
                    status=refused.status,
                    subject=refused.subject,
                    remote=f"{client.host}:{client.port}" if client else None,
                    method=f"console {request.method}",
                    detail=refused.message,
                )
            if refused.status == 401 and request.method == "GET" and request.url.path.rstrip("/").endswith("/console"):
                return self._render("login.html", {"message": ""}, 401)
            return self._render("refused.html", {"message": refused.message}, refused.status)

    def _render(self, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        html = _templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    async def _form(self, request: Request) -> FormData | Response:
        """The request's form, or a 413 when its body is over ``MAX_FORM_BYTES`` (not read further)."""
        announced = request.headers.get("content-length", "")
        body = bytearray()
        if not (announced.isdigit() and int(announced) > MAX_FORM_BYTES):
            async for chunk in request.stream():  # a chunked body announces nothing: counted as it comes
                body += chunk
                if len(body) > MAX_FORM_BYTES:
                    break
        if len(body) > MAX_FORM_BYTES or (announced.isdigit() and int(announced) > MAX_FORM_BYTES):
            return self._render("refused.html", {"message": f"a console form is at most {MAX_FORM_BYTES} bytes"}, 413)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await Request(request.scope, replay).form()

    async def login(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        key = form.get("key")
        if not isinstance(key, str) or not key.strip():
            return self._render("login.html", {"message": "enter an API key"}, 401)
        checked = await self._operator(request, key.strip())
        if isinstance(checked, Response):
            if checked.status_code == 401:
                return self._render("login.html", {"message": "that key is not valid"}, 401)
            return checked
        response = RedirectResponse("/console/", status_code=303)
        response.set_cookie(
            COOKIE,
            key.strip(),
            max_age=COOKIE_MAX_AGE_S,
            path="/console",
            httponly=True,
            samesite="strict",
            secure=self.parts.secure_cookie,
        )
        return response

    async def logout(self, _request: Request) -> Response:
        response = RedirectResponse("/console/", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # -- pages ----------------------------------------------------------------------------------
    async def page(self, request: Request, message: str = "", status: int = 200) -> Response:
        checked = await self._operator(request)
        if isinstance(checked, Response):
            return checked
        principal, credential = checked
        context = {"operator": principal.subject, "csrf": csrf_token(credential), "csrf_field": CSRF_FIELD}
        context["message"] = message
        for name in PARTS:
            context.update(await self._part_context(name, request))
        return self._render("page.html", context, status)

    async def part(self, request: Request) -> Response:
        checked = await self._operator(request)
        if isinstance(checked, Response):
            return checked
        name = request.path_params["name"]
        if name not in PARTS:
            return self._render("refused.html", {"message": f"no part {name!r}"}, 404)
        context = await self._part_context(name, request)
        context.update(csrf=csrf_token(checked[1]), csrf_field=CSRF_FIELD)
        return self._render(f"{name}.html", context)

    async def _part_context(self, name: str, request: Request) -> dict[str, Any]:
        nc: NatsClient | None = self.parts.nats()
        if name == "tools":
            live = await live_workers(nc, self.parts.subjects) if nc is not None else {}
            entries = [self.parts.catalogue.get(n) for n in self.parts.catalogue.names()]
            return {"tools": [e.descriptor for e in entries if e is not None], "live": live}
        if name == "packages":
            return {"packages": await self._packages(nc, request.query_params.get("package", ""))}
        if name == "workers":
            return {"workers": self.feed.live_workers()}
        if name == "tasks":
            store: TaskStore | None = self.parts.tasks()
            records = []
            if store is not None:
                try:
                    records = sorted(await store.records(), key=lambda r: -r.created_at)[:MAX_TASKS_SHOWN]
                except BusError:
                    records = []
            return {"tasks": records}
        return {"stats": self.parts.rates.read(advance=False)}

    async def _packages(self, nc: NatsClient | None, asked: str) -> list[tuple[str, ReleaseReply | str]]:
        catalogue = self.parts.catalogue
        entries = [catalogue.get(n) for n in catalogue.names()]
        names = sorted({e.descriptor.component for e in entries if e is not None and e.descriptor.component})
        if asked and asked not in names:
            names.insert(0, asked)
        if nc is None:
            return [(n, "the gateway is not connected to NATS") for n in names]
        shown: list[tuple[str, ReleaseReply | str]] = []
        for name in names:
            try:
                reply = await release(nc, self.parts.subjects, "versions", ReleaseRequest(name=name))
            except RegistryRefused as exc:
                shown.append((name, str(exc)))
                continue
            shown.append((name, reply if reply.versions else "served from the workers' config, not published"))
        return shown

    async def events(self, request: Request) -> Response:
        checked = await self._operator(request)
        if isinstance(checked, Response):
            return checked
        nc = self.parts.nats()
        if nc is not None:
            await self.feed.start(nc)
        return StreamingResponse(
            self.feed.stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # -- actions --------------------------------------------------------------------------------
    async def _action_form(self, request: Request) -> tuple[Principal, dict[str, str]] | Response:
        checked = await self._operator(request)
        if isinstance(checked, Response):
            return checked
        principal, credential = checked
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        if not csrf_ok(credential, form.get(CSRF_FIELD)):
            return self._render("refused.html", {"message": "the form's CSRF token is missing or wrong"}, 403)
        return principal, {k: v.strip() for k, v in form.items() if isinstance(v, str)}

    def _audit(self, action: str, principal: Principal, target: str, outcome: str, detail: str) -> None:
        audit: AuditTrail | None = self.parts.audit()
        if audit is not None:
            audit.console_action(
                ConsoleActionEvent(
                    action=action,
                    principal=principal.subject,
                    target=target,
                    outcome=outcome,  # type: ignore[arg-type]
                    at=time.time(),
                    detail=detail,
                )
            )

    async def package_action(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        if verb not in ACTIONS:
            return self._render("refused.html", {"message": f"no action {verb!r}"}, 404)
        got = await self._action_form(request)
        if isinstance(got, Response):
            return got
        principal, form = got
        release_request = ReleaseRequest(
            name=form.get("name", ""),
            version=form.get("version", ""),
            alias=form.get("alias", "") or "latest",
            reason=form.get("reason", ""),
        )
        target = f"{release_request.name} {release_request.version}".strip()
        nc = self.parts.nats()
        try:
            if nc is None:
                raise RegistryRefused("the gateway is not connected to NATS")
            reply = await release(nc, self.parts.subjects, verb, release_request)
        except RegistryRefused as exc:
            self._audit(verb, principal, target, "refused", str(exc))
            return await self.page(request, message=f"{verb} refused: {exc}", status=409)
        self._audit(verb, principal, target, "ok", reply.message)
        return await self.page(request, message=reply.message or f"{verb} done")

    async def cancel_task(self, request: Request) -> Response:
        got = await self._action_form(request)
        if isinstance(got, Response):
            return got
        principal, form = got
        task_id = form.get("task_id", "")
        store: TaskStore | None = self.parts.tasks()
        try:
            if store is None:
                raise TaskNotFound("the task store is not open yet")
            # The call tasks/cancel makes; the operator may cancel anyone's task (no owner check).
            cancelled = await store.cancel(task_id)
        except (TaskNotFound, TaskFinished, BusError) as exc:
            detail = f"task {task_id} had already ended" if isinstance(exc, TaskFinished) else str(exc)
            self._audit("cancel", principal, task_id, "refused", detail)
            return await self.page(request, message=f"cancel refused: {detail}", status=409)
        self._audit("cancel", principal, task_id, "ok", f"{cancelled.tool}: cancelled")
        return await self.page(request, message=f"cancelled task {task_id}")
