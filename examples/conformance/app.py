"""The MCP conformance suite's tools, as guests see toolbus: through `toolbus:mcp/context`.

Built with componentize-py against wit/conformance.wit (world `test`), so every export is a
tool named `test_<export>`: exactly the names the suite calls.
"""

import base64
import json
import struct
import time

import wit_world
from componentize_py_types import Err
from wit_world.exports import completion, prompts, resources
from wit_world.imports import client, context, notify
from wit_world.imports.context import (
    ContentBlock_Audio,
    ContentBlock_Embedded,
    ContentBlock_Image,
    ContentBlock_Text,
    EmbeddedResource,
    LogLevel,
    Media,
)

RED_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def silent_wav(samples: int = 800, rate: int = 8000) -> bytes:
    """A mono 8-bit PCM WAV of `samples` samples of silence (0.1 s at 8 kHz)."""
    data = b"\x80" * samples
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate, 1, 8)
    return header + fmt + b"data" + struct.pack("<I", len(data)) + data


EMBEDDED = EmbeddedResource(
    uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content.", blob=None
)


def _ask(requests: dict) -> dict:
    """Send several client requests in one question; their answers by key (Err: the ask-error)."""
    pairs = [(key, json.dumps(request)) for key, request in requests.items()]
    return {key: json.loads(text) for key, text in client.ask(pairs)}


def _elicit_request(message: str, properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def _sampling_request(text: str, max_tokens: int) -> dict:
    messages = [{"role": "user", "content": {"type": "text", "text": text}}]
    return {"method": "sampling/createMessage", "params": {"messages": messages, "maxTokens": max_tokens}}


ROOTS_REQUEST = {"method": "roots/list", "params": {}}


def _text_of(sampled: dict) -> str:
    content = sampled.get("content")
    if isinstance(content, list):
        content = content[0] if content else {}
    return content.get("text", "no response") if isinstance(content, dict) else "no response"


def _problem(error: Err) -> str:
    """What an ask-error says (its case, and its text when it has one)."""
    value = error.value
    payload = getattr(value, "value", None)
    name = type(value).__name__.rsplit("_", 1)[-1].lower()
    return f"{name}: {payload}" if payload else name


SEP1034_FORM = {
    "name": {"type": "string", "description": "User name", "default": "John Doe"},
    "age": {"type": "integer", "description": "User age", "default": 30},
    "score": {"type": "number", "description": "User score", "default": 95.5},
    "status": {
        "type": "string",
        "description": "User status",
        "enum": ["active", "inactive", "pending"],
        "default": "active",
    },
    "verified": {"type": "boolean", "description": "Verification status", "default": True},
}

SEP1330_FORM = {
    "untitledSingle": {"type": "string", "description": "Select one option", "enum": ["option1", "option2", "option3"]},
    "titledSingle": {
        "type": "string",
        "description": "Select one option with titles",
        "oneOf": [
            {"const": "value1", "title": "First Option"},
            {"const": "value2", "title": "Second Option"},
            {"const": "value3", "title": "Third Option"},
        ],
    },
    "legacyEnum": {
        "type": "string",
        "description": "Select one option (legacy)",
        "enum": ["opt1", "opt2", "opt3"],
        "enumNames": ["Option One", "Option Two", "Option Three"],
    },
    "untitledMulti": {
        "type": "array",
        "description": "Select multiple options",
        "minItems": 1,
        "maxItems": 3,
        "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
    },
    "titledMulti": {
        "type": "array",
        "description": "Select multiple options with titles",
        "minItems": 1,
        "maxItems": 3,
        "items": {
            "anyOf": [
                {"const": "value1", "title": "First Choice"},
                {"const": "value2", "title": "Second Choice"},
                {"const": "value3", "title": "Third Choice"},
            ]
        },
    },
}


def _elicit_form(message: str, form: dict) -> str:
    try:
        answer = json.loads(client.elicit(message, json.dumps({"type": "object", "properties": form, "required": []})))
    except Err as error:
        return f"Elicitation not supported or error: {_problem(error)}"
    return f"Elicitation completed: action={answer.get('action')}, content={json.dumps(answer.get('content') or {})}"


class WitWorld(wit_world.WitWorld):
    def simple_text(self) -> str:
        return "This is a simple text response for testing."

    def image_content(self) -> None:
        context.add_content(ContentBlock_Image(Media(data=RED_PIXEL_PNG, mime_type="image/png")))

    def audio_content(self) -> None:
        context.add_content(ContentBlock_Audio(Media(data=silent_wav(), mime_type="audio/wav")))

    def embedded_resource(self) -> None:
        context.add_content(ContentBlock_Embedded(EMBEDDED))

    def multiple_content_types(self) -> None:
        context.add_content(ContentBlock_Text("Multiple content types test:"))
        context.add_content(ContentBlock_Image(Media(data=RED_PIXEL_PNG, mime_type="image/png")))
        context.add_content(ContentBlock_Embedded(EMBEDDED))

    def tool_with_logging(self) -> str:
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            context.log(LogLevel.INFO, message)
            time.sleep(0.05)
        return "Logging test completed"

    def tool_with_progress(self) -> str:
        for step in (0.0, 50.0, 100.0):
            context.report_progress(step, 100.0, f"Completed step {int(step)} of 100")
            time.sleep(0.05)
        return "Progress test completed"

    def error_handling(self) -> str:
        raise Err("This tool intentionally returns an error for testing")

    def missing_capability(self) -> str:
        # examples/toolbus.toml declares `client_capabilities = ["sampling"]` for it, so a gateway
        # refuses a client without sampling before the guest runs; a caller that skips the
        # gateway (plain NATS) meets the same refusal here.
        client.require(["sampling"])
        return "Success"

    def sampling(self, prompt: str) -> str:
        try:
            sampled = json.loads(client.sample(json.dumps(_sampling_request(prompt, 100)["params"])))
        except Err as error:
            return f"Sampling not supported or error: {_problem(error)}"
        return f"LLM response: {_text_of(sampled)}"

    def elicitation(self, message: str) -> str:
        schema = {
            "type": "object",
            "properties": {"response": {"type": "string", "description": "User's response"}},
            "required": ["response"],
        }
        try:
            answer = json.loads(client.elicit(message, json.dumps(schema)))
        except Err as error:
            return f"Elicitation not supported or error: {_problem(error)}"
        return f"User response: action={answer.get('action')}, content={json.dumps(answer.get('content') or {})}"

    def elicitation_sep1034_defaults(self) -> str:
        return _elicit_form("Please review and update the form fields with defaults", SEP1034_FORM)

    def elicitation_sep1330_enums(self) -> str:
        return _elicit_form("Please select options from the enum fields", SEP1330_FORM)

    def input_required_result_elicitation(self) -> str:
        request = _elicit_request("What is your name?", {"name": {"type": "string"}}, ["name"])
        answer = _ask({"user_name": request})["user_name"]
        return f"Hello, {(answer.get('content') or {}).get('name', 'stranger')}!"

    def input_required_result_sampling(self) -> str:
        answer = _ask({"sample_request": _sampling_request("What is the capital of France?", 100)})
        return f"Sampling result: {_text_of(answer['sample_request'])}"

    def input_required_result_list_roots(self) -> str:
        roots = _ask({"roots_request": ROOTS_REQUEST})["roots_request"].get("roots", [])
        return f"Found {len(roots)} root(s)"

    def input_required_result_request_state(self) -> str:
        request = _elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
        answer = _ask({"confirm": request})["confirm"]
        ok = (answer.get("content") or {}).get("ok") is True
        return "state-ok: requestState validated" if ok else "not confirmed"

    def input_required_result_multiple_inputs(self) -> str:
        answers = _ask(
            {
                "user_name": _elicit_request("What is your name?", {"name": {"type": "string"}}, ["name"]),
                "greeting": _sampling_request("Generate a greeting", 50),
                "client_roots": ROOTS_REQUEST,
            }
        )
        name = (answers["user_name"].get("content") or {}).get("name", "stranger")
        roots = answers["client_roots"].get("roots", [])
        return f"Name: {name}; Greeting: {_text_of(answers['greeting'])}; Roots: {len(roots)}"

    def input_required_result_multi_round(self) -> str:
        first = _ask({"step1": _elicit_request("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])})
        name = (first["step1"].get("content") or {}).get("name", "friend")
        color_form = {"color": {"type": "string"}}
        second = _ask({"step2": _elicit_request("Step 2: What is your favorite color?", color_form, ["color"])})
        color = (second["step2"].get("content") or {}).get("color", "no colour")
        return f"Multi-round complete for {name} who likes {color}"

    def input_required_result_tampered_state(self) -> str:
        request = _elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
        _ask({"confirm": request})
        return "integrity-ok: state verified"

    def input_required_result_capabilities(self) -> str:
        received = []
        try:
            _ask({"elicit_input": _elicit_request("Elicitation input", {"value": {"type": "string"}}, ["value"])})
            received.append("elicit_input")
        except Err:
            pass  # not declared: asked only what the client can answer
        try:
            _ask({"sample_input": _sampling_request("Sample request", 50)})
            received.append("sample_input")
        except Err:
            pass
        if not received:
            return "No supported capabilities declared"
        return f"capabilities-ok: received {','.join(received)}"

    def streaming_elicitation(self) -> str:
        request = _elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
        try:
            _ask({"confirm": request})
        except Err as error:
            return f"Streaming complete ({_problem(error)})"
        return "Streaming complete"

    def logging_tool(self) -> str:
        context.log(LogLevel.INFO, "Diagnostic trace logging activated")
        return "Logging evaluated"

    def update_watched_resource(self) -> str:
        notify.resource_updated(WATCHED)
        return f"{WATCHED} updated"


# -- resources, prompts and completion (toolbus:mcp/resources, prompts, completion) ------------------

WATCHED = "test://watched-resource"
TEMPLATE = "test://template/{id}/data"
TEMPLATE_PREFIX, TEMPLATE_SUFFIX = "test://template/", "/data"


class Resources(wit_world.exports.Resources):
    def list_resources(self) -> list[resources.ResourceEntry]:
        return [
            resources.ResourceEntry(
                "test://static-text",
                "static-text",
                "Static Text Resource",
                "A static text resource for testing",
                "text/plain",
            ),
            resources.ResourceEntry(
                "test://static-binary",
                "static-binary",
                "Static Binary Resource",
                "A static binary resource (image) for testing",
                "image/png",
            ),
            resources.ResourceEntry(
                WATCHED, "watched-resource", "Watched Resource", "A resource that changes", "text/plain"
            ),
        ]

    def list_templates(self) -> list[resources.ResourceTemplate]:
        return [
            resources.ResourceTemplate(
                TEMPLATE,
                "template",
                "Resource Template",
                "A resource template with parameter substitution",
                "application/json",
            )
        ]

    def read(self, uri: str) -> list[resources.Contents]:
        if uri == "test://static-text":
            return [resources.Contents(uri, "text/plain", "This is the content of the static text resource.", None)]
        if uri == "test://static-binary":
            return [resources.Contents(uri, "image/png", None, RED_PIXEL_PNG)]
        if uri == WATCHED:
            return [resources.Contents(uri, "text/plain", "Watched resource content", None)]
        if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
            item = uri[len(TEMPLATE_PREFIX) : -len(TEMPLATE_SUFFIX)]
            if item and "/" not in item:
                text = json.dumps({"id": item, "templateTest": True, "data": f"Data for ID: {item}"})
                return [resources.Contents(uri, "application/json", text, None)]
        raise Err(resources.ReadError_NotFound())


def _user(block: context.ContentBlock) -> prompts.Message:
    return prompts.Message(prompts.Role.USER, block)


class Prompts(wit_world.exports.Prompts):
    def list_prompts(self) -> list[prompts.Prompt]:
        def argument(name: str, description: str) -> prompts.Argument:
            return prompts.Argument(name, None, description, True)

        return [
            prompts.Prompt("simple_prompt", "Simple Test Prompt", "A simple prompt without arguments", []),
            prompts.Prompt(
                "prompt_with_arguments",
                "Prompt With Arguments",
                "A prompt with required arguments",
                [argument("arg1", "First test argument"), argument("arg2", "Second test argument")],
            ),
            prompts.Prompt(
                "prompt_with_embedded_resource",
                "Prompt With Embedded Resource",
                "A prompt that includes an embedded resource",
                [argument("resourceUri", "URI of the resource to embed")],
            ),
            prompts.Prompt("prompt_with_image", "Prompt With Image", "A prompt that includes image content", []),
            prompts.Prompt(
                "input_required_result_prompt",
                "Prompt That Asks",
                "A prompt that asks the user for its context first (input_required in 2026-07-28)",
                [],
            ),
        ]

    def get(self, name: str, arguments: list[tuple[str, str]]) -> prompts.PromptResult:
        args = dict(arguments)
        if name == "simple_prompt":
            return prompts.PromptResult(None, [_user(ContentBlock_Text("This is a simple prompt for testing."))])
        if name == "prompt_with_arguments":
            missing = [a for a in ("arg1", "arg2") if a not in args]
            if missing:
                raise Err(f"missing required argument(s): {', '.join(missing)}")
            text = f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"
            return prompts.PromptResult(None, [_user(ContentBlock_Text(text))])
        if name == "prompt_with_embedded_resource":
            if "resourceUri" not in args:
                raise Err("missing required argument: resourceUri")
            text = "Embedded resource content for testing."
            embedded = EmbeddedResource(args["resourceUri"], "text/plain", text, None)
            return prompts.PromptResult(
                None,
                [
                    _user(ContentBlock_Embedded(embedded)),
                    _user(ContentBlock_Text("Please process the embedded resource above.")),
                ],
            )
        if name == "prompt_with_image":
            image = ContentBlock_Image(Media(data=RED_PIXEL_PNG, mime_type="image/png"))
            return prompts.PromptResult(
                None, [_user(image), _user(ContentBlock_Text("Please analyze the image above."))]
            )
        if name == "input_required_result_prompt":
            # The prompt is re-run with the user's answer (toolbus asks by re-running prompts).
            form = _elicit_request("What context should the prompt use?", {"context": {"type": "string"}}, ["context"])
            try:
                answer = _ask({"user_context": form})["user_context"]
            except Err as failure:
                raise Err(f"could not ask the user: {failure.value}") from None
            given = (answer.get("content") or {}).get("context", "") if answer.get("action") == "accept" else ""
            text = f"Use this context: {given}" if given else "The user gave no context."
            return prompts.PromptResult(None, [_user(ContentBlock_Text(text))])
        raise Err(f"unknown prompt {name!r}")


COMPLETIONS = {"arg1": ["paris", "park", "party"], "arg2": ["alpha", "beta", "gamma"], "id": ["1", "2", "123"]}


class Completion(wit_world.exports.Completion):
    def complete(
        self, ref: completion.Reference, argument: str, value: str, context: list[tuple[str, str]]
    ) -> completion.Completions:
        values = [v for v in COMPLETIONS.get(argument, []) if v.startswith(value)]
        return completion.Completions(values, len(values), False)
