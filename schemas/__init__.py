"""Wire types, config models and the WIT ↔ JSON mapping. Imports no other toolbus package."""

from schemas.codec import DecodeError, decode, decode_json, encode
from schemas.errors import ArgumentError, ConfigError, ErrorCode, SchemasError, WitTypeError
from schemas.wire import (
    UNSET,
    AudioContent,
    CallToolResult,
    Content,
    ErrorBody,
    ErrorReply,
    ImageContent,
    JsonSchema,
    TextContent,
    ToolDescriptor,
    ToolGetRequest,
    ToolList,
    ToolListRequest,
    WorkerAnnouncement,
)

__all__ = [
    "UNSET",
    "ArgumentError",
    "AudioContent",
    "CallToolResult",
    "ConfigError",
    "Content",
    "DecodeError",
    "ErrorBody",
    "ErrorCode",
    "ErrorReply",
    "ImageContent",
    "JsonSchema",
    "SchemasError",
    "TextContent",
    "ToolDescriptor",
    "ToolGetRequest",
    "ToolList",
    "ToolListRequest",
    "WitTypeError",
    "WorkerAnnouncement",
    "decode",
    "decode_json",
    "encode",
]
