"""The operation: the unit of change that is stored, merged and synced (spec 1.2, 3)."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from kora.core.canonical import canonical_json
from kora.core.hlc import HLCTimestamp
from kora.core.json_types import JsonValue


class OpType(enum.StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class AtomicOpType(enum.StrEnum):
    INCREMENT = "increment"
    MAX = "max"
    MIN = "min"
    APPEND = "append"
    REMOVE = "remove"


@attrs.frozen
class AtomicOp:
    """The intent of an atomic update of one field (spec 3.7)."""

    type: AtomicOpType
    value: JsonValue

    def to_wire(self) -> dict[str, JsonValue]:
        return {"type": str(self.type), "value": self.value}


@attrs.frozen(eq=True, hash=False)
class Operation:
    """One content-addressed operation.

    ``data``, ``previous_data`` and ``atomic_ops`` are plain mappings that must be treated as
    immutable.  Two operations with the same ``id`` are the same operation everywhere; the
    hash of an ``Operation`` is the hash of its id.
    """

    id: str
    node_id: str
    type: OpType
    collection: str
    record_id: str
    data: Mapping[str, JsonValue] | None
    previous_data: Mapping[str, JsonValue] | None
    timestamp: HLCTimestamp
    sequence_number: int
    causal_deps: tuple[str, ...] = ()
    schema_version: int = 1
    atomic_ops: Mapping[str, AtomicOp] | None = None
    transaction_id: str | None = None
    mutation_name: str | None = None

    def __hash__(self) -> int:
        return hash(self.id)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that enter the content id, with the wire (camelCase) keys (spec 3.2)."""
        fields: dict[str, Any] = {
            "type": str(self.type),
            "collection": self.collection,
            "recordId": self.record_id,
            "data": None if self.data is None else dict(self.data),
            "timestamp": {
                "wallTime": self.timestamp.wall_time,
                "logical": self.timestamp.logical,
                "nodeId": self.timestamp.node_id,
            },
            "nodeId": self.node_id,
        }
        if self.atomic_ops:
            fields["atomicOps"] = {k: v.to_wire() for k, v in self.atomic_ops.items()}
        return fields

    def compute_id(self) -> str:
        """The content id of this operation's hashed fields (spec 3.2)."""
        # ``operation_id(self.hashed_fields())`` without its two intermediate objects: the
        # hashed object directly, with the serialized timestamp (run for every operation a
        # server receives).
        hashed: dict[str, Any] = {
            "type": str(self.type),
            "collection": self.collection,
            "recordId": self.record_id,
            "data": None if self.data is None else dict(self.data),
            "timestamp": self.timestamp.serialize(),
            "nodeId": self.node_id,
        }
        if self.atomic_ops:
            hashed["atomicOps"] = {k: v.to_wire() for k, v in self.atomic_ops.items()}
        return hashlib.sha256(canonical_json(hashed).encode("utf-8")).hexdigest()

    def verify_id(self) -> bool:
        """Whether ``id`` is the content id of the hashed fields.

        A timestamp out of the serializable range, or data that is not JSON, cannot have a
        valid id, so they give False.
        """
        try:
            return self.id == self.compute_id()
        except (TypeError, ValueError):
            return False

    def with_computed_id(self) -> Operation:
        """A copy whose ``id`` is the content id (for example after re-stamping a timestamp)."""
        return attrs.evolve(self, id=self.compute_id())
