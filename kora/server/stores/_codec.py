"""Rows of the SQL server stores: operations and records to column tuples and back.

Both SQL stores use the same columns in the same order; only the placeholders differ.
JSON columns are written with ``ensure_ascii=True`` so that any Python string, including a
lone surrogate, survives the round trip through SQLite and PostgreSQL ``TEXT`` (which must be
valid UTF-8), and read back with ``json.loads``, which keeps ``1`` an int and ``1.0`` a float.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from kora.core.hlc import HLCTimestamp
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.merge import RecordState

#: Columns of ``kora_operations`` written by ``operation_row`` (in this order).
OPERATION_COLUMNS: Final = (
    "id",
    "delivery_seq",
    "node_id",
    "type",
    "collection",
    "record_id",
    "data",
    "previous_data",
    "atomic_ops",
    "wall_time",
    "logical",
    "timestamp_node_id",
    "sequence_number",
    "causal_deps",
    "schema_version",
    "transaction_id",
    "mutation_name",
    "received_at",
)

#: Columns read back by ``delivered_from_row`` (in this order).
OPERATION_SELECT: Final = ", ".join(OPERATION_COLUMNS[:-1])

#: Columns of ``kora_records`` written by ``record_row`` (in this order).
RECORD_COLUMNS: Final = (
    "collection",
    "record_id",
    "fields",
    "field_versions",
    "field_atomic",
    "deleted",
    "version",
    "created_version",
    "last_op_id",
)

RECORD_SELECT: Final = ", ".join(RECORD_COLUMNS)


def _plain(value: object) -> Any:
    # Operation data is typed as Mapping; json only knows dict.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# What json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"),
# default=_plain) builds on every call, built once (several columns per operation).
_column_encoder: Final = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_plain
)


def dump_json(value: object) -> str:
    """JSON text for a column; raises ``ValueError`` for NaN or infinity."""
    return _column_encoder.encode(value)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


#: The JSON columns of an operation: data, previous_data, atomic_ops, causal_deps.
JsonColumns = tuple[str | None, str | None, str | None, str]


def operation_json_columns(op: Operation) -> JsonColumns:
    """The JSON text of ``op``'s JSON columns; raises ``ValueError`` or ``TypeError`` if one
    cannot be stored."""
    return (
        None if op.data is None else dump_json(op.data),
        None if op.previous_data is None else dump_json(op.previous_data),
        None
        if op.atomic_ops is None
        else dump_json({name: intent.to_wire() for name, intent in op.atomic_ops.items()}),
        dump_json(list(op.causal_deps)),
    )


def operation_row(
    op: Operation, delivery_sequence: int, received_at: int, columns: JsonColumns | None = None
) -> tuple[Any, ...]:
    """The ``OPERATION_COLUMNS`` values of ``op`` (``columns``: its
    ``operation_json_columns``, when already encoded)."""
    data, previous_data, atomic, causal_deps = (
        operation_json_columns(op) if columns is None else columns
    )
    return (
        op.id,
        delivery_sequence,
        op.node_id,
        str(op.type),
        op.collection,
        op.record_id,
        data,
        previous_data,
        atomic,
        op.timestamp.wall_time,
        op.timestamp.logical,
        op.timestamp.node_id,
        op.sequence_number,
        causal_deps,
        op.schema_version,
        op.transaction_id,
        op.mutation_name,
        received_at,
    )


def operation_from_row(row: Sequence[Any]) -> Operation:
    """Inverse of ``operation_row`` for a row selected with ``OPERATION_SELECT``."""
    atomic_wire = _load(row[8])
    atomic_ops: dict[str, AtomicOp] | None = (
        None
        if atomic_wire is None
        else {
            name: AtomicOp(AtomicOpType(intent["type"]), intent["value"])
            for name, intent in atomic_wire.items()
        }
    )
    return Operation(
        id=row[0],
        node_id=row[2],
        type=OpType(row[3]),
        collection=row[4],
        record_id=row[5],
        data=_load(row[6]),
        previous_data=_load(row[7]),
        atomic_ops=atomic_ops,
        timestamp=HLCTimestamp(int(row[9]), int(row[10]), row[11]),
        sequence_number=int(row[12]),
        causal_deps=tuple(_load(row[13])),
        schema_version=int(row[14]),
        transaction_id=row[15],
        mutation_name=row[16],
    )


def delivery_sequence_of_row(row: Sequence[Any]) -> int:
    return int(row[1])


def record_row(state: RecordState) -> tuple[Any, ...]:
    """The ``RECORD_COLUMNS`` values of ``state``; raises ``ValueError`` on non-finite numbers."""
    return (
        state.collection,
        state.record_id,
        dump_json(state.fields),
        dump_json(state.field_versions),
        dump_json({name: str(kind) for name, kind in state.field_atomic.items()}),
        bool(state.deleted),
        state.version,
        state.created_version,
        state.last_op_id,
    )


def record_from_row(row: Sequence[Any]) -> RecordState:
    """Inverse of ``record_row`` for a row selected with ``RECORD_SELECT``."""
    fields: dict[str, JsonValue] = json.loads(row[2])
    versions: dict[str, str] = json.loads(row[3])
    atomic = {name: AtomicOpType(kind) for name, kind in json.loads(row[4]).items()}
    return RecordState(
        collection=row[0],
        record_id=row[1],
        fields=fields,
        field_versions=versions,
        field_atomic=atomic,
        deleted=bool(row[5]),
        version=row[6],
        created_version=row[7],
        last_op_id=row[8],
    )
