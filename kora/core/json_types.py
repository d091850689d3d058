"""Type names for JSON values as they travel in operation data."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeAlias

from kora.core.errors import ValidationError

JsonScalar: TypeAlias = bool | int | float | str | None
JsonValue: TypeAlias = JsonScalar | list["JsonValue"] | dict[str, "JsonValue"]
JsonObject: TypeAlias = dict[str, JsonValue]

#: Values nested deeper than this are refused by ``copy_json_value``.
MAX_DATA_DEPTH = 512


def copy_json_value(value: object, path: str = "value", depth: int = 0) -> JsonValue:
    """A deep copy of a JSON value, checking that it is one.

    Mappings become dicts and tuples lists.  What JSON cannot carry the same way to a JS
    peer is refused: NaN and infinities, non-string keys, raw bytes, other types.

    Args:
        value: The value to copy.
        path: How to name the value in an error message (e.g. ``data.title``).
        depth: Nesting depth of ``value`` (internal).

    Raises:
        ValidationError: Naming the path of the first offending member.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path} is {value!r}; JSON has no NaN or Infinity")
        return float(value)
    if depth >= MAX_DATA_DEPTH:
        raise ValidationError(f"{path} is nested deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, Mapping):
        copied: dict[str, JsonValue] = {}
        for key, member in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{path} has a non-string key {key!r}")
            copied[key] = copy_json_value(member, f"{path}.{key}", depth + 1)
        return copied
    if isinstance(value, list | tuple):
        return [copy_json_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        raise ValidationError(
            f"{path} is raw bytes; store binary as {{'$koraBytes': <base64>}} "
            "(kora.core.schema.encode_bytes_value)"
        )
    raise ValidationError(f"{path} is a {type(value).__name__}, which is not a JSON value")
