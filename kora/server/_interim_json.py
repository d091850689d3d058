"""Interim JSON codec for the server, until ``kora.protocol``'s ``JsonCodec`` lands.

Generic over the attrs message classes: wire names are the camelCase of the attributes,
optional fields are omitted when ``None``, and decoding checks JSON types strictly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from kora.core.canonical import json_stringify
from kora.core.errors import MalformedOperationError
from kora.core.operations import operation_from_wire, operation_to_wire
from kora.protocol.errors import (
    DuplicateKeyError,
    FrameTooLargeError,
    InvalidJsonError,
    InvalidNumberError,
    InvalidOperationError,
    MissingFieldError,
    RemoteProtocolError,
    TooManyOperationsError,
    UnknownMessageTypeError,
    WrongTypeError,
)
from kora.protocol.limits import Limits
from kora.protocol.messages import MESSAGE_TYPES, SIDE_CHANNEL_TYPES, Message, OperationBatch

_BOOL: Final = {"accepted", "is_final", "retriable", "blob_storage_enabled"}
_INT: Final = {
    "schema_version",
    "supported_schema_min",
    "supported_schema_max",
    "server_time",
    "server_max_delivery_sequence",
    "batch_index",
    "total_batches",
    "base_delivery_sequence",
    "max_delivery_sequence",
    "last_sequence_number",
    "delivery_sequence",
    "last_delivery_sequence",
}
_MAPPING: Final = {"version_vector", "sync_scope", "accepted_scope", "states"}
_STR_TUPLE: Final = {"supported_wire_formats"}
_TUPLE: Final = {"sync_queries"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidNumberError(f"{name} is not a JSON number")


class JsonCodec:
    """Decode/encode JSON frames (see the module docstring)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def encode(self, message: Message) -> str:
        wire: dict[str, Any] = {"type": message.TYPE}
        for field in attrs.fields(type(message)):
            if field.name == "extra":
                continue
            value = getattr(message, field.name)
            if value is None:
                continue
            if field.name == "operations":
                value = [operation_to_wire(op) for op in value]
            elif isinstance(value, tuple):
                value = list(value)
            wire[_camel(field.name)] = value
        return json_stringify(wire)

    def decode(self, frame: str) -> Message:
        if len(frame.encode("utf-8", "surrogatepass")) > self.limits.max_frame_bytes:
            raise FrameTooLargeError("frame too large")
        try:
            wire = json.loads(frame, object_pairs_hook=_pairs, parse_constant=_reject_constant)
        except RemoteProtocolError:
            raise
        except (ValueError, RecursionError) as exc:
            raise InvalidJsonError(f"not JSON: {exc}") from exc
        if not isinstance(wire, dict):
            raise InvalidJsonError("a frame must be a JSON object")
        kind = wire.get("type")
        cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise UnknownMessageTypeError(f"unknown message type {kind!r}")
        try:
            return self._build(cls, wire)
        except RemoteProtocolError as exc:
            if cls.TYPE in SIDE_CHANNEL_TYPES:
                exc.fatal = False
            raise

    def _build(self, cls: type[Message], wire: Mapping[str, Any]) -> Message:
        kwargs: dict[str, Any] = {}
        known = {"type"}
        for field in attrs.fields(cls):
            if field.name == "extra":
                continue
            key = _camel(field.name)
            known.add(key)
            required = field.default is attrs.NOTHING
            if key not in wire or (wire[key] is None and not required):
                if required and field.name not in ("bytes",):
                    raise MissingFieldError(f"{cls.TYPE}: {key} is required")
                kwargs[field.name] = None
                continue
            kwargs[field.name] = self._value(cls, field.name, key, wire[key])
        kwargs["extra"] = {k: v for k, v in wire.items() if k not in known}
        return cls(**kwargs)

    def _value(self, cls: type[Message], name: str, key: str, value: Any) -> Any:
        def wrong(expected: str) -> WrongTypeError:
            return WrongTypeError(f"{cls.TYPE}: {key} must be {expected}")

        if name == "operations":
            if not isinstance(value, list):
                raise wrong("an array")
            if len(value) > self.limits.max_operations_per_batch:
                raise TooManyOperationsError("too many operations")
            try:
                return tuple(operation_from_wire(item) for item in value)
            except MalformedOperationError as exc:
                raise InvalidOperationError(str(exc)) from exc
        if name in _BOOL:
            if type(value) is not bool:
                raise wrong("a boolean")
            return value
        if name in _INT:
            if type(value) is not int or value < 0:
                raise wrong("a non-negative integer")
            return value
        if name == "client_id":
            if type(value) not in (int, float):
                raise wrong("a number")
            return value
        if name in _MAPPING:
            if not isinstance(value, dict):
                raise wrong("an object")
            if name == "version_vector" and not all(
                type(v) is int and v >= 0 for v in value.values()
            ):
                raise wrong("an object of non-negative integers")
            if name in ("sync_scope", "accepted_scope") and not all(
                isinstance(v, dict) for v in value.values()
            ):
                raise wrong("{collection: {field: value}}")
            return value
        if name in _STR_TUPLE:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise wrong("an array of strings")
            return tuple(value)
        if name in _TUPLE:
            if not isinstance(value, list):
                raise wrong("an array")
            return tuple(value)
        if not isinstance(value, str):
            raise wrong("a string")
        return value


__all__ = ["JsonCodec", "OperationBatch"]
