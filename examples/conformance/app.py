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
from wit_world.imports import context, notify
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
        raise Err(f"unknown prompt {name!r}")


COMPLETIONS = {"arg1": ["paris", "park", "party"], "arg2": ["alpha", "beta", "gamma"], "id": ["1", "2", "123"]}


class Completion(wit_world.exports.Completion):
    def complete(
        self, ref: completion.Reference, argument: str, value: str, context: list[tuple[str, str]]
    ) -> completion.Completions:
        values = [v for v in COMPLETIONS.get(argument, []) if v.startswith(value)]
        return completion.Completions(values, len(values), False)
