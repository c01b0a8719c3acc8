"""``toolbus tasks``: list, submit, inspect and cancel durable tasks over NATS.

A thin client of the registry's task requests (``registry.task_desk``); the principal is
``nats`` unless ``--principal`` names another, which the registry accepts only when signed
with the deployment's principal key (an operator holding ``[nats] principal_key``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from bus.call_request import new_request_id
from bus.connection import connected, send_request
from bus.errors import BusTimeout, NoResponders, PayloadTooLarge
from bus.payloads import Payloads
from bus.principal import PrincipalSigner
from bus.subjects import Header, Subjects
from cli.options import Verb, add_common_options, add_json_option, common_option, json_arguments, run_verb, wants_json
from schemas.codec import decode, encode
from schemas.config import Settings
from schemas.wire import ErrorReply, TaskList, TaskQuery, TaskRecord, TaskSubmit

REQUEST_TIMEOUT_S = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tasks`` verb and its sub-verbs."""
    tasks = subparsers.add_parser("tasks", help="list, submit, inspect and cancel durable tasks")
    verbs = tasks.add_subparsers(dest="task_verb")
    listing = verbs.add_parser("list", help="the tasks, newest first (the default)")
    submit = verbs.add_parser("submit", help="run a tool as a task; prints the task")
    submit.add_argument("tool")
    submit.add_argument("arguments", nargs="?", default="{}", help="JSON object of arguments")
    leaves = [tasks, listing, submit]
    for verb, help_text in (("get", "one task's record"), ("result", "a finished task's result"), ("cancel", "cancel")):
        leaf = verbs.add_parser(verb, help=help_text)
        leaf.add_argument("task_id")
        leaves.append(leaf)
    # `toolbus tasks submit TOOL --nats URL` as well as `toolbus tasks --nats URL submit TOOL`.
    for leaf in leaves:
        add_common_options(leaf)
        leaf.add_argument(
            "--principal", default=argparse.SUPPRESS, help="whose tasks (default: nats; `*` lists everyone's)"
        )
    add_json_option(tasks)
    add_json_option(listing)
    tasks.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    args.principal = common_option(args, "principal") or ""
    verb: Verb = {
        None: _list,
        "list": _list,
        "submit": _submit,
        "get": _one("get"),
        "result": _one("result"),
        "cancel": _one("cancel"),
    }[args.task_verb]
    return run_verb(args, verb)


async def _request(settings: Settings, verb: str, body: bytes, principal: str) -> bytes | None:
    subjects = Subjects(settings.nats.prefix)
    headers: dict[str, str] = {}
    key = settings.nats.principal_key
    if principal and key is not None:
        # An operator holding the principal key speaks for the principal it names, as a gateway does.
        headers[Header.REQUEST_ID] = new_request_id()
        subject = subjects.task_request(verb)
        PrincipalSigner(key).stamp(headers, principal, subject=subject, body=body, valid_for_s=REQUEST_TIMEOUT_S)
    async with connected(settings.nats, name="toolbus-tasks") as nc:
        payloads = Payloads(nc, subjects, max_bytes=settings.nats.max_payload_bytes)
        try:
            # A submit or a result larger than one message travels as a claim check (bus.payloads).
            sent, sent_headers = await payloads.offload(body, headers or None)
            reply = await send_request(
                nc, subjects.task_request(verb), sent, timeout_s=REQUEST_TIMEOUT_S, headers=sent_headers
            )
            reply.data = await payloads.take(reply.headers, reply.data)
        except PayloadTooLarge as exc:
            print(f"toolbus: {exc}", file=sys.stderr)
            return None
        except (NoResponders, BusTimeout):
            print(f"toolbus: no registry is answering on {subjects.task_request(verb)}", file=sys.stderr)
            return None
    if reply.headers and Header.ERROR in reply.headers:
        error = decode(reply.data, ErrorReply).error
        print(f"toolbus: error {error.code}: {error.message}", file=sys.stderr)
        return None
    return reply.data


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    tasks: list[TaskRecord] = []
    cursor = ""
    while True:
        data = await _request(
            settings, "list", encode(TaskQuery(principal=args.principal, cursor=cursor)), args.principal
        )
        if data is None:
            return 1
        page = decode(data, TaskList)
        tasks.extend(page.tasks)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    if wants_json(args):
        print(encode(tasks).decode())
        return 0
    print(f"{'TASK':<32}  {'TOOL':<24}  {'STATUS':<10}  {'CREATED':<20}  {'TRIES':>5}  MESSAGE")
    for task in tasks:
        created = datetime.fromtimestamp(task.created_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        print(
            f"{task.task_id:<32}  {task.tool:<24}  {task.status:<10}  {created:<20}  {task.attempts:>5}  "
            f"{task.status_message}"
        )
    return 0


async def _submit(settings: Settings, args: argparse.Namespace) -> int:
    arguments = json_arguments(args.arguments)
    if arguments is None:
        return 2
    body = encode(TaskSubmit(tool=args.tool, arguments=arguments, principal=args.principal))
    data = await _request(settings, "submit", body, args.principal)
    if data is None:
        return 1
    print(data.decode())
    return 0


def _one(verb: str) -> Verb:
    async def act(settings: Settings, args: argparse.Namespace) -> int:
        data = await _request(
            settings, verb, encode(TaskQuery(task_id=args.task_id, principal=args.principal)), args.principal
        )
        if data is None:
            return 1
        print(data.decode())
        return 0

    return act
