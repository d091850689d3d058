"""Building operations for merge tests (ids are unique labels, not content hashes)."""

from __future__ import annotations

from collections.abc import Mapping

from kora.core.hlc import HLCTimestamp
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType


def make_op(
    op_id: str,
    type_: OpType,
    wall: int,
    node: str = "node-a",
    *,
    logical: int = 0,
    data: Mapping[str, JsonValue] | None = None,
    atomic: Mapping[str, tuple[AtomicOpType, JsonValue]] | None = None,
    record_id: str = "rec-1",
    collection: str = "todos",
) -> Operation:
    return Operation(
        id=op_id,
        node_id=node,
        type=type_,
        collection=collection,
        record_id=record_id,
        data=None if type_ is OpType.DELETE else dict(data or {}),
        previous_data=None,
        timestamp=HLCTimestamp(wall, logical, node),
        sequence_number=wall,
        atomic_ops=(None if not atomic else {k: AtomicOp(t, v) for k, (t, v) in atomic.items()}),
    )
