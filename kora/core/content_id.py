"""Content-addressed operation ids (spec 3.2).

``id = lowercase_hex(sha256(utf8(canonical_json(H))))`` where ``H`` holds exactly ``type``,
``collection``, ``recordId``, ``data``, ``timestamp`` (the *serialized* HLC string),
``nodeId`` and, only when present and non-empty, ``atomicOps``.  Everything else an operation
carries (previous data, sequence number, causal deps, schema version, transaction id,
mutation name) is deliberately left out, so it can change without changing the id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from kora.core.canonical import canonical_json
from kora.core.errors import ValidationError
from kora.core.hlc import HLCTimestamp

__all__ = ["hashed_object", "operation_id"]

_REQUIRED = ("type", "collection", "recordId", "data", "timestamp", "nodeId")


def _serialized_timestamp(value: object) -> str:
    if isinstance(value, HLCTimestamp):
        return value.serialize()
    if isinstance(value, str):
        # Already serialized: parse to validate, and re-serialize so padding is canonical.
        return HLCTimestamp.parse(value).serialize()
    if isinstance(value, Mapping):
        try:
            ts = HLCTimestamp(value["wallTime"], value["logical"], value["nodeId"])
        except KeyError as exc:
            raise ValidationError(f"timestamp lacks the field {exc.args[0]!r}") from None
        return ts.serialize()
    raise ValidationError(
        f"timestamp must be an HLCTimestamp, a {{wallTime, logical, nodeId}} mapping or a "
        f"serialized HLC string, got {type(value).__name__}"
    )


def hashed_object(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The object ``H`` whose canonical JSON is hashed (spec 3.2).

    Args:
        fields: Wire (camelCase) keys: ``type``, ``collection``, ``recordId``, ``data``,
            ``timestamp`` and ``nodeId``, plus optional ``atomicOps``.  Other keys (for
            example a whole ``SerializedOperation``) are ignored.  ``timestamp`` may be a
            ``{wallTime, logical, nodeId}`` mapping, an ``HLCTimestamp`` or a serialized
            string.

    Returns:
        A new dict with the serialized timestamp and ``atomicOps`` only when non-empty.

    Raises:
        ValidationError: If a required field is missing.
        InvalidTimestampError: If the timestamp is out of range.
    """
    missing = [name for name in _REQUIRED if name not in fields]
    if missing:
        raise ValidationError(f"cannot compute an operation id: missing {', '.join(missing)}")
    hashed: dict[str, Any] = {
        "type": fields["type"],
        "collection": fields["collection"],
        "recordId": fields["recordId"],
        "data": fields["data"],
        "timestamp": _serialized_timestamp(fields["timestamp"]),
        "nodeId": fields["nodeId"],
    }
    atomic_ops = fields.get("atomicOps")
    if atomic_ops:
        hashed["atomicOps"] = atomic_ops
    return hashed


def operation_id(fields: Mapping[str, Any]) -> str:
    """The content id of an operation: 64 lowercase hex digits of SHA-256 (spec 3.2).

    Args:
        fields: See ``hashed_object``.

    Returns:
        The id exactly as the Kora.js reference computes it.
    """
    text = canonical_json(hashed_object(fields))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
