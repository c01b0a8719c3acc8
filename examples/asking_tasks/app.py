"""The tasks extension's tools that ask the client, as guests see toolbus: `toolbus:mcp/client`.

Built with componentize-py against wit/asking-tasks.wit. Every ask is a blocking host call that
returns the client's answer as JSON text, or an `ask-error` (unsupported capability, timed out,
cancelled, failed), which these tools turn into a tool-execution error. Inside a durable task an
unanswered question ends the run (the task is `input_required` until `tasks/update` answers it)
and the tool runs again from the start with the answers: so these tools ask before they act.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import client


def form(message: str, properties: dict, required: list[str]) -> dict:
    """One `elicitation/create` request for a form."""
    schema = {"type": "object", "properties": properties, "required": required}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def ask_all(requests: dict) -> dict:
    """Ask several forms at once (one question, several keys); each accepted content by key, or
    an error result naming what went wrong."""
    try:
        pairs = client.ask([(key, json.dumps(request)) for key, request in requests.items()])
    except Err as failure:
        raise Err(f"could not ask the user: {failure.value}") from None
    contents = {}
    for key, text in pairs:
        answer = json.loads(text)
        if answer.get("action") != "accept":
            raise Err(f"the user chose {answer.get('action')!r}")
        contents[key] = answer.get("content") or {}
    return contents


def ask(message: str, properties: dict, required: list[str]) -> dict:
    """Elicit one form (key `elicitation`, as `client.elicit` asks)."""
    return ask_all({"elicitation": form(message, properties, required)})["elicitation"]


class WitWorld(wit_world.WitWorld):
    def confirm_delete(self, filename: str | None) -> str:
        name = filename or "the file"
        content = ask(f"Delete {name}?", {"confirm": {"type": "boolean", "title": "Confirm"}}, ["confirm"])
        return f"Deleted {name}" if content.get("confirm") else f"Kept {name}"

    def multi_input(self) -> str:
        # Both at once: inside a task, both keys are pending together and may be answered apart.
        answers = ask_all(
            {
                "name": form("Your name?", {"name": {"type": "string"}}, ["name"]),
                "colour": form("Your favourite colour?", {"colour": {"type": "string"}}, ["colour"]),
            }
        )
        return f"Name: {answers['name'].get('name')}; colour: {answers['colour'].get('colour')}"

    def test_tool_with_task(self) -> str:
        content = ask("What is your name?", {"name": {"type": "string"}}, ["name"])
        return f"Hello, {content.get('name')}!"
