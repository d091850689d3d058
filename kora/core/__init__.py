"""Values and pure algorithms: operations, HLC, version vectors, content ids, schema.

No I/O and no trio here (enforced by import-linter).
"""

from kora.core.canonical import canonical_json, js_number, json_stringify
from kora.core.content_id import operation_id
from kora.core.errors import (
    BrokenError,
    CausalCycleError,
    ClosedError,
    InvalidTimestampError,
    KoraError,
    LocalError,
    RemoteClockDriftError,
    RemoteError,
    ValidationError,
)
from kora.core.hlc import MAX_LOGICAL, HLCTimestamp, utf16_key
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType

__all__ = [
    "MAX_LOGICAL",
    "AtomicOp",
    "AtomicOpType",
    "BrokenError",
    "CausalCycleError",
    "ClosedError",
    "HLCTimestamp",
    "InvalidTimestampError",
    "KoraError",
    "LocalError",
    "OpType",
    "Operation",
    "RemoteClockDriftError",
    "RemoteError",
    "ValidationError",
    "canonical_json",
    "js_number",
    "json_stringify",
    "operation_id",
    "utf16_key",
]
