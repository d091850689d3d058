"""The one append algorithm, shared by every server store.

``plan_append`` runs *inside* a store's write transaction (synchronously, in the store's
worker thread).  It reads what it needs through a small ``AppendReader`` and returns an
``AppendPlan``: exactly the rows to write.  Keeping the decisions here means the three stores
cannot disagree about dedup, delivery sequences, admission or materialization; they only
differ in how they read and write rows and how they serialize transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from kora.core.operation import Operation, OpType
from kora.merge import OutOfOrderError, RecordState, apply, fold
from kora.server.stores._codec import (
    JsonColumns,
    dump_json,
    operation_json_columns,
    operation_row,
    record_row,
)
from kora.server.stores.base import (
    Admit,
    AppendStatus,
    DeliveredOperation,
    OperationOutcome,
)

RecordKey = tuple[str, str]


class AppendReader(Protocol):
    """Reads of the open write transaction that ``plan_append`` needs."""

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored."""
        ...

    def current_max_delivery_sequence(self) -> int:
        """The committed maximum; PostgreSQL also locks the counter here until commit."""
        ...

    def load_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, RecordState]:
        """The stored states of those of ``keys`` that have a record (one query)."""
        ...

    def load_record_operations(self, key: RecordKey) -> list[Operation]:
        """Every stored operation of the record (for a re-fold)."""
        ...


@attrs.frozen
class AppendPlan:
    """What one append writes.

    Attributes:
        outcomes: One per input op, in input order.
        applied: The new operations with their delivery sequences, ascending.
        applied_json: For each of ``applied``, its JSON columns (``operation_json_columns``),
            encoded once, while checking that the operation can be stored.
        version_vector: Per node, the highest sequence number among ``applied`` (the store
            writes ``max(stored, this)``).
        records: The new state of every record ``applied`` touched.
        record_rows: ``record_row`` of each of ``records``.
        max_delivery_sequence: The counter value after the commit.
    """

    outcomes: tuple[OperationOutcome, ...]
    applied: tuple[DeliveredOperation, ...]
    applied_json: tuple[JsonColumns, ...]
    version_vector: dict[str, int]
    records: dict[RecordKey, RecordState]
    record_rows: dict[RecordKey, tuple[Any, ...]]
    max_delivery_sequence: int

    def operation_rows(self, received_at: int) -> list[tuple[Any, ...]]:
        """The ``OPERATION_COLUMNS`` values of ``applied``."""
        return [
            operation_row(d.operation, d.delivery_sequence, received_at, columns)
            for d, columns in zip(self.applied, self.applied_json, strict=True)
        ]


def plan_append(reader: AppendReader, ops: Sequence[Operation], admit: Admit | None) -> AppendPlan:
    """Decide, op by op in batch order, what happens to each operation (see ``ServerStore``).

    An operation whose columns, or whose record's new state, cannot be stored (a non-finite
    number, a value that is not JSON) is ``INVALID``, alone.  Only the fields an operation
    writes can make its record's state unstorable, so those are what is checked per
    operation, and each record's row is encoded once, for its final state; should that
    reasoning ever fail, the batch is planned again encoding every intermediate state.
    """
    try:
        return _plan(reader, ops, admit, every_state=False)
    except _UnstorableRecordError:
        return _plan(reader, ops, admit, every_state=True)


class _UnstorableRecordError(Exception):
    """A record's final state cannot be stored although each operation's fields could."""


def _plan(
    reader: AppendReader, ops: Sequence[Operation], admit: Admit | None, *, every_state: bool
) -> AppendPlan:
    unique_ids = list(dict.fromkeys(op.id for op in ops))
    seen = reader.existing_ids(unique_ids) if unique_ids else set()
    sequence = reader.current_max_delivery_sequence()
    wanted = list(dict.fromkeys((op.collection, op.record_id) for op in ops if op.id not in seen))
    stored = reader.load_records(wanted) if wanted else {}
    records: dict[RecordKey, RecordState | None] = {key: stored.get(key) for key in wanted}
    batch_ops: dict[RecordKey, list[Operation]] = {}
    touched: dict[RecordKey, RecordState] = {}
    rows: dict[RecordKey, tuple[Any, ...]] = {}
    outcomes: list[OperationOutcome] = []
    applied: list[DeliveredOperation] = []
    applied_json: list[JsonColumns] = []
    version_vector: dict[str, int] = {}
    for op in ops:
        if op.id in seen:
            outcomes.append(OperationOutcome(op, AppendStatus.DUPLICATE))
            continue
        key = (op.collection, op.record_id)
        current = records[key]
        if admit is not None and not admit(op, current):
            outcomes.append(OperationOutcome(op, AppendStatus.REJECTED))
            continue
        try:
            # Both fail now, for this op alone, if it cannot be stored.
            columns = operation_json_columns(op)
            new_state, replayed = _materialize(reader, key, current, batch_ops.get(key, []), op)
            if every_state or replayed:
                rows[key] = record_row(new_state)
            else:
                _check_written_fields(op, new_state)
                rows.pop(key, None)  # encoded below, for the record's final state
        except (TypeError, ValueError, OverflowError):
            outcomes.append(OperationOutcome(op, AppendStatus.INVALID))
            continue
        seen.add(op.id)
        sequence += 1
        records[key] = touched[key] = new_state
        batch_ops.setdefault(key, []).append(op)
        applied.append(DeliveredOperation(op, sequence))
        applied_json.append(columns)
        outcomes.append(OperationOutcome(op, AppendStatus.APPLIED, sequence))
        if op.sequence_number > version_vector.get(op.node_id, 0):
            version_vector[op.node_id] = op.sequence_number
    for key, state in touched.items():
        if key not in rows:
            try:
                rows[key] = record_row(state)
            except (TypeError, ValueError, OverflowError) as exc:
                raise _UnstorableRecordError from exc
    return AppendPlan(
        outcomes=tuple(outcomes),
        applied=tuple(applied),
        applied_json=tuple(applied_json),
        version_vector=version_vector,
        records=touched,
        record_rows=rows,
        max_delivery_sequence=sequence,
    )


def _check_written_fields(op: Operation, state: RecordState) -> None:
    """Raise ``ValueError``/``TypeError`` if a field ``op`` wrote into ``state`` (applied in
    order, not replayed) cannot be stored.

    ``apply`` changes only the fields in ``op.data``: to the data's value (checked with the
    operation's own columns) or, for an atomic intent, to a computed number, checked here.
    """
    if op.atomic_ops and op.data is not None and op.type is not OpType.DELETE:
        fields = state.fields
        dump_json([fields.get(name) for name in op.atomic_ops if name in op.data])


def _materialize(
    reader: AppendReader,
    key: RecordKey,
    current: RecordState | None,
    earlier_in_batch: list[Operation],
    op: Operation,
) -> tuple[RecordState, bool]:
    """The record's state with ``op``, and whether its history was replayed for it."""
    try:
        return apply(current, op), False
    except OutOfOrderError:
        # The op slots into the middle of the record's history: replay all of it.
        state = fold([*reader.load_record_operations(key), *earlier_in_batch, op])
        assert state is not None  # the list holds at least op
        return state, True
