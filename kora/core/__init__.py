"""Values and pure algorithms: operations, HLC, version vectors, content ids, schema.

No I/O and no trio here (enforced by import-linter).
"""

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
    "utf16_key",
]
