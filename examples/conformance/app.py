"""The MCP conformance suite's tools, as guests see toolbus: through `toolbus:mcp/context`.

Built with componentize-py against wit/conformance.wit (world `test`), so every export is a
tool named `test_<export>`: exactly the names the suite calls.
"""

import base64
import struct
import time

import wit_world
from componentize_py_types import Err
from wit_world.imports import context
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

    def missing_capability(self) -> str:
        return "Success"

    def logging_tool(self) -> str:
        context.log(LogLevel.INFO, "Diagnostic trace logging activated")
        return "Logging evaluated"
