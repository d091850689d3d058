"""Value types that go in and out of a ``Store``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

import attrs

from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, Operation, OpType

__all__ = [
    "ApplyResult",
    "ChangeSet",
    "Comparison",
    "LocalMutation",
    "Order",
    "Record",
    "RejectedOperation",
    "RemoteRejection",
    "StoreStatistics",
    "Where",
]

#: The comparison operators of a ``Where`` condition.
Comparison: TypeAlias = Literal["==", "!=", "<", "<=", ">", ">=", "in"]
#: One query condition ``(field, operator, value)``; ``"in"`` takes a list of values.
Where: TypeAlias = tuple[str, Comparison, JsonValue]
#: One ordering key ``(field, descending)``.
Order: TypeAlias = tuple[str, bool]


@attrs.frozen
class Record:
    """A record as stored, read by ``get``/``query``.

    Attributes:
        collection: The collection.
        id: The record id.
        fields: Field values (a plain dict; treat it as read-only).
        deleted: True for a tombstone (only returned with ``include_deleted``).
        version: Serialized HLC of the newest operation on the record.
        created_version: Serialized HLC of the oldest operation on the record.
        field_versions: Field name to the serialized HLC of its current value's writer.
    """

    collection: str
    id: str
    fields: Mapping[str, JsonValue]
    deleted: bool
    version: str
    created_version: str
    field_versions: Mapping[str, str]


@attrs.frozen
class LocalMutation:
    """One local change, turned into one operation by ``Store.write_local``.

    Attributes:
        type: Insert, update or delete.
        collection: The collection.
        record_id: The record id.  Optional for an insert (a new UUIDv7 is used); required
            for update and delete.
        data: Insert: the whole record.  Update: the fields to set (plain last-writer-wins
            values).  Delete: must be None.
        atomic: Update only: field name to an atomic intent (increment, max, min, append,
            remove).  The store resolves each intent against the record's current value;
            the operation carries the intent in ``atomic_ops`` and the resolved value in
            ``data`` (spec 3.7).  A field may not be in both ``data`` and ``atomic``.
        mutation_name: Optional name of the app mutation, carried on the operation.
    """

    type: OpType
    collection: str
    record_id: str | None = None
    data: Mapping[str, JsonValue] | None = None
    atomic: Mapping[str, AtomicOp] | None = None
    mutation_name: str | None = None

    @classmethod
    def insert(
        cls, collection: str, data: Mapping[str, JsonValue], *, record_id: str | None = None
    ) -> LocalMutation:
        return cls(OpType.INSERT, collection, record_id, data)

    @classmethod
    def update(
        cls,
        collection: str,
        record_id: str,
        data: Mapping[str, JsonValue] | None = None,
        *,
        atomic: Mapping[str, AtomicOp] | None = None,
    ) -> LocalMutation:
        return cls(OpType.UPDATE, collection, record_id, data or {}, atomic)

    @classmethod
    def delete(cls, collection: str, record_id: str) -> LocalMutation:
        return cls(OpType.DELETE, collection, record_id)


_EMPTY: Mapping[str, frozenset[str]] = MappingProxyType({})


@attrs.frozen
class ChangeSet:
    """Which records a committed write touched: collection to record ids.

    Attributes:
        records: Collection name to the ids of records whose state changed or was
            re-materialized (a superset of real changes is allowed; a missing one is not).
    """

    records: Mapping[str, frozenset[str]] = _EMPTY

    def __bool__(self) -> bool:
        return bool(self.records)

    @property
    def collections(self) -> frozenset[str]:
        return frozenset(self.records)

    @classmethod
    def of(cls, touched: Mapping[str, set[str]]) -> ChangeSet:
        return cls(MappingProxyType({c: frozenset(ids) for c, ids in touched.items() if ids}))


@attrs.frozen
class RemoteRejection:
    """A remote operation that ``apply_remote`` refused (it was neither stored nor merged).

    Attributes:
        operation: The refused operation.
        code: ``INVALID_TIMESTAMP``, ``CLOCK_DRIFT``, ``INVALID_OPERATION`` or
            ``SEQUENCE_CONFLICT`` (another op already holds its node's sequence number).
        message: Human-readable reason.
        retriable: True when the same operation may be accepted later (clock drift).
    """

    operation: Operation
    code: str
    message: str
    retriable: bool


@attrs.frozen
class ApplyResult:
    """What ``apply_remote`` did with a batch.

    Attributes:
        applied: Newly stored and merged operations, in the order given.
        duplicates: How many operations were already stored (or repeated in the batch).
        rejected: Operations refused one by one; the rest of the batch still applied.
        changes: Records whose state changed.
    """

    applied: tuple[Operation, ...] = ()
    duplicates: int = 0
    rejected: tuple[RemoteRejection, ...] = ()
    changes: ChangeSet = ChangeSet()

    @property
    def applied_count(self) -> int:
        return len(self.applied)


@attrs.frozen
class RejectedOperation:
    """A local operation the server rejected, kept for the app to inspect.

    Attributes:
        op_id: Id of the rejected operation (still in the operation log: the local state
            keeps it until the app decides what to do).
        code: The server's rejection code.
        message: The server's message.
        retriable: Whether the server said a retry could succeed.
        rejected_at: When the store recorded it, integer ms since the epoch.
    """

    op_id: str
    code: str
    message: str
    retriable: bool
    rejected_at: int


@attrs.frozen
class StoreStatistics:
    """Cheap, synchronous numbers about a store.

    Attributes:
        tasks_waiting: Tasks queued for the store's worker (its limiter's queue depth).
        change_counter: Committed writes that changed at least one record, since open.
    """

    tasks_waiting: int
    change_counter: int
