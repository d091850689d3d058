"""Values and pure algorithms: operations, HLC, version vectors, content ids, schema.

No I/O and no trio here (enforced by import-linter).
"""

from kora.core.atomic import apply_atomic_op
from kora.core.canonical import canonical_json, js_number, json_stringify
from kora.core.causal import causal_order
from kora.core.content_id import operation_id
from kora.core.errors import (
    BrokenError,
    CausalCycleError,
    ClosedError,
    InvalidTimestampError,
    KoraError,
    LocalError,
    MalformedOperationError,
    RemoteClockDriftError,
    RemoteError,
    SchemaValidationError,
    ValidationError,
)
from kora.core.hlc import (
    MAX_LOGICAL,
    DriftLevel,
    HLCTimestamp,
    HybridLogicalClock,
    check_ingest_bounds,
    utf16_key,
)
from kora.core.ids import is_uuid, uuid7
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.core.operations import create_operation, operation_from_wire, operation_to_wire
from kora.core.schema import (
    Collection,
    Field,
    FieldKind,
    Schema,
    array,
    binary,
    boolean,
    bytes_,
    decode_bytes_value,
    define_schema,
    encode_bytes_value,
    enum,
    integer,
    is_bytes_value,
    json,
    number,
    string,
    timestamp,
)
from kora.core.version_vector import VersionVector, compute_delta

__all__ = [
    "MAX_LOGICAL",
    "AtomicOp",
    "AtomicOpType",
    "BrokenError",
    "CausalCycleError",
    "ClosedError",
    "Collection",
    "DriftLevel",
    "Field",
    "FieldKind",
    "HLCTimestamp",
    "HybridLogicalClock",
    "InvalidTimestampError",
    "KoraError",
    "LocalError",
    "MalformedOperationError",
    "OpType",
    "Operation",
    "RemoteClockDriftError",
    "RemoteError",
    "Schema",
    "SchemaValidationError",
    "ValidationError",
    "VersionVector",
    "apply_atomic_op",
    "array",
    "binary",
    "boolean",
    "bytes_",
    "canonical_json",
    "causal_order",
    "check_ingest_bounds",
    "compute_delta",
    "create_operation",
    "decode_bytes_value",
    "define_schema",
    "encode_bytes_value",
    "enum",
    "integer",
    "is_bytes_value",
    "is_uuid",
    "js_number",
    "json",
    "json_stringify",
    "number",
    "operation_from_wire",
    "operation_id",
    "operation_to_wire",
    "string",
    "timestamp",
    "utf16_key",
    "uuid7",
]
