"""The tasks extension's tools that ask the client, as guests see toolbus: `toolbus:mcp/client`.

Built with componentize-py against wit/asking-tasks.wit. Every ask is a blocking host call that
returns the client's answer as JSON text, or an `ask-error` (unsupported capability, timed out,
cancelled, failed), which these tools turn into a tool-execution error.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import client


def ask(message: str, properties: dict, required: list[str]) -> dict:
    """Elicit a form; the accepted content, or an error result naming what went wrong."""
    schema = {"type": "object", "properties": properties, "required": required}
    try:
        answer = json.loads(client.elicit(message, json.dumps(schema)))
    except Err as failure:
        raise Err(f"could not ask the user: {failure.value}") from None
    if answer.get("action") != "accept":
        raise Err(f"the user chose {answer.get('action')!r}")
    return answer.get("content") or {}


class WitWorld(wit_world.WitWorld):
    def confirm_delete(self, filename: str | None) -> str:
        name = filename or "the file"
        content = ask(f"Delete {name}?", {"confirm": {"type": "boolean", "title": "Confirm"}}, ["confirm"])
        return f"Deleted {name}" if content.get("confirm") else f"Kept {name}"

    def multi_input(self) -> str:
        first = ask("Your name?", {"name": {"type": "string"}}, ["name"])
        second = ask("Your favourite colour?", {"colour": {"type": "string"}}, ["colour"])
        return f"Name: {first.get('name')}; colour: {second.get('colour')}"

    def test_tool_with_task(self) -> str:
        content = ask("What is your name?", {"name": {"type": "string"}}, ["name"])
        return f"Hello, {content.get('name')}!"
