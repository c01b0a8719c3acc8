"""A component's resources, prompts and completion: the ``toolbus:mcp`` interfaces it exports.

``resources``, ``prompts`` and ``completion`` (``schemas/wit/toolbus-mcp/mcp.wit``) are not
tools. The worker lists a component's resources, templates and prompts once, when it loads it
(``GuestSurface.listed``); every ``read``, ``get`` and ``complete`` afterwards runs like a tool
call: in a fresh sandbox with the component's grants and limits, off the event loop. Values
cross with the same WIT ↔ JSON mapping as tool arguments (``schemas.wit_values``), then become
wire types (``schemas.wire``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from wasmtime import component as wc

from schemas.errors import ErrorCode
from schemas.wire import (
    AudioContent,
    CompleteReply,
    ComponentSurface,
    Content,
    EmbeddedResource,
    GetPromptReply,
    ImageContent,
    PromptArgument,
    PromptDescriptor,
    PromptMessage,
    ReadResourceReply,
    ResourceContents,
    ResourceDescriptor,
    ResourceTemplateDescriptor,
    TextContent,
)
from schemas.wit_values import from_wasm, to_wasm

MCP_PACKAGE: Final = "toolbus:mcp/"
"""Exports under this package are toolbus's own interfaces, never tools."""
RESOURCES: Final = "resources"
PROMPTS: Final = "prompts"
COMPLETION: Final = "completion"
MAX_COMPLETION_VALUES: Final = 100
"""MCP caps ``completion.values`` at 100; longer lists are cut and ``hasMore`` set."""


def is_mcp_export(export_name: str) -> bool:
    """True for an export of ``toolbus:mcp/*`` (``toolbus:mcp/resources@0.1.0``…): not a tool."""
    return export_name.startswith(MCP_PACKAGE)


class SurfaceFailure(Exception):
    """Raised when a read, get or complete cannot produce a result; ``code`` is the bus error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Export:
    index: Any
    func_type: Any


GuestBody = Callable[[Any, Any], Any]
"""Runs in the guest: given (store, instance), calls one export."""
Sandboxed = Callable[[float, GuestBody], Any]
"""Runs a ``GuestBody`` in a fresh sandbox within a time limit in seconds (the component's
``run_sandboxed``); a trap or a limit hit raises ``SurfaceFailure``."""


class GuestSurface:
    """The ``toolbus:mcp`` exports of one compiled component, found once at load."""

    def __init__(self, component_name: str, exports: Mapping[str, Mapping[str, _Export]]) -> None:
        self.component_name = component_name
        self._exports = exports
        """Interface (``resources``…) → function name → its export."""

    @classmethod
    def find(cls, engine: Any, component_name: str, component: Any) -> GuestSurface:
        """The ``toolbus:mcp`` interfaces ``component`` exports (none: an empty surface)."""
        exports: dict[str, dict[str, _Export]] = {}
        for export_name, extern in component.type.exports(engine).items():
            if not is_mcp_export(export_name) or not isinstance(extern.ty, wc.ComponentInstanceType):
                continue
            interface = export_name[len(MCP_PACKAGE) :].split("@", 1)[0]
            if interface not in (RESOURCES, PROMPTS, COMPLETION):
                continue
            parent = component.get_export_index(export_name)
            exports[interface] = {
                name: _Export(component.get_export_index(name, parent), inner.ty)
                for name, inner in extern.ty.exports(engine).items()
                if isinstance(inner.ty, wc.FuncType)
            }
        return cls(component_name, exports)

    @property
    def exported(self) -> bool:
        return bool(self._exports)

    def _call(self, instantiate: Sandboxed, timeout_s: float, interface: str, func: str, *json_args: Any) -> Any:
        """Call one export in a fresh sandbox; its result as JSON values.

        Raises:
            SurfaceFailure: the component lacks the export, or the guest trapped or ran out of time.
        """
        export = self._exports.get(interface, {}).get(func)
        if export is None:
            raise SurfaceFailure(
                ErrorCode.NOT_FOUND, f"component {self.component_name!r} exports no {interface}.{func}"
            )
        params = export.func_type.params
        args = [to_wasm(ty, value, (name,)) for (name, ty), value in zip(params, json_args, strict=True)]

        def body(store: Any, instance: Any) -> Any:
            function = instance.get_func(store, export.index)
            value = function(store, *args)
            function.post_return(store)
            return value

        value = instantiate(timeout_s, body)
        result_type = export.func_type.result
        return None if result_type is None else from_wasm(result_type, value)

    def listed(self, instantiate: Sandboxed, timeout_s: float, *, digest: str = "") -> ComponentSurface:
        """What the component serves, listed once (resources, templates, prompts).

        Raises:
            SurfaceFailure: a list function trapped or ran out of time.
        """
        name = self.component_name
        resources: list[ResourceDescriptor] = []
        templates: list[ResourceTemplateDescriptor] = []
        prompts: list[PromptDescriptor] = []
        if RESOURCES in self._exports:
            resources = [
                _convert(ResourceDescriptor, entry)
                for entry in self._call(instantiate, timeout_s, RESOURCES, "list-resources")
            ]
            templates = [
                _convert(ResourceTemplateDescriptor, entry)
                for entry in self._call(instantiate, timeout_s, RESOURCES, "list-templates")
            ]
        if PROMPTS in self._exports:
            for prompt in self._call(instantiate, timeout_s, PROMPTS, "list-prompts"):
                prompts.append(
                    PromptDescriptor(
                        name=prompt_name(name, prompt["name"]),
                        guest_name=prompt["name"],
                        title=prompt["title"],
                        description=prompt["description"],
                        arguments=[_convert(PromptArgument, argument) for argument in prompt["arguments"]],
                    )
                )
        return ComponentSurface(
            component=name,
            resources=resources,
            templates=templates,
            prompts=prompts,
            completion=COMPLETION in self._exports,
            digest=digest,
        )

    def read(self, instantiate: Sandboxed, timeout_s: float, uri: str) -> ReadResourceReply:
        """``resources.read(uri)``.

        Raises:
            SurfaceFailure: NOT_FOUND when the guest says so; INTERNAL for its other failures.
        """
        outcome = self._call(instantiate, timeout_s, RESOURCES, "read", uri)
        if "err" in outcome:
            error = outcome["err"]
            if error["tag"] == "not-found":
                raise SurfaceFailure(ErrorCode.NOT_FOUND, f"resource not found: {uri}")
            raise SurfaceFailure(ErrorCode.INTERNAL, f"reading {uri} failed: {error.get('value', '')}")
        return ReadResourceReply([_convert(ResourceContents, contents) for contents in outcome["ok"]])

    def get_prompt(
        self, instantiate: Sandboxed, timeout_s: float, name: str, arguments: Mapping[str, str]
    ) -> GetPromptReply:
        """``prompts.get(name, arguments)``.

        Raises:
            SurfaceFailure: INVALID_PARAMS with the guest's message when it refuses.
        """
        outcome = self._call(instantiate, timeout_s, PROMPTS, "get", name, [[k, v] for k, v in arguments.items()])
        if "err" in outcome:
            raise SurfaceFailure(ErrorCode.INVALID_PARAMS, str(outcome["err"]))
        result = outcome["ok"]
        messages = [PromptMessage(m["role"], content_of(m["content"])) for m in result["messages"]]
        return GetPromptReply(messages=messages, description=result["description"])

    def complete(
        self,
        instantiate: Sandboxed,
        timeout_s: float,
        ref_type: str,
        ref: str,
        argument: str,
        value: str,
        context: Mapping[str, str],
    ) -> CompleteReply:
        """``completion.complete``; a component without it completes nothing."""
        if COMPLETION not in self._exports:
            return CompleteReply(values=[], total=0)
        reference = {"tag": "prompt" if ref_type == "prompt" else "resource-template", "value": ref}
        pairs = [[k, v] for k, v in context.items()]
        result = self._call(instantiate, timeout_s, COMPLETION, "complete", reference, argument, value, pairs)
        values = list(result["values"])
        more = bool(result["has-more"]) or len(values) > MAX_COMPLETION_VALUES
        return CompleteReply(values=values[:MAX_COMPLETION_VALUES], total=result["total"], has_more=more)


def prompt_name(component: str, guest_name: str) -> str:
    """A prompt's MCP name: the component's tool prefix plus its own name, as for tools
    (component ``test``, prompt ``simple-prompt`` → ``test_simple_prompt``)."""
    return f"{component}_{guest_name.replace('-', '_')}"


def _convert(kind: type[Any], value: dict[str, Any]) -> Any:
    """A wire struct from a WIT record's JSON form (kebab-case fields → their camelCase wire names)."""
    return msgspec.convert({_camel(key): v for key, v in value.items() if v is not None}, kind)


def _camel(kebab: str) -> str:
    first, *rest = kebab.split("-")
    return first + "".join(word.capitalize() for word in rest)


def content_of(block: dict[str, Any]) -> Content:
    """The MCP content block of a ``context.content-block`` in its JSON form (bytes already base64)."""
    tag, payload = block["tag"], block["value"]
    if tag == "text":
        return TextContent(payload)
    if tag == "image":
        return ImageContent(payload["data"], payload["mime-type"])
    if tag == "audio":
        return AudioContent(payload["data"], payload["mime-type"])
    return EmbeddedResource(_convert(ResourceContents, payload))
