"""Fold a record's operations into its state (spec 3.7, architecture section 5).

Theory of operation
-------------------

A record's state is a pure function of the *set* of its operations: ``fold`` deduplicates
them by id, sorts them into HLC total order (wall time, logical counter, node id by UTF-16
code units; the op id breaks the tie that only a misbehaving node can create) and replays
them, exactly as the reference's ``replayOperationsForRecord`` does:

* an insert sets the record to its data (every field a plain last-writer-wins write) and
  un-deletes it;
* an update writes each field of its data.  If the field carries an atomic op and the
  field's previous writer was an atomic op of the *same type*, the intent is composed onto
  the running value (``apply_atomic_op``), so concurrent increments add up.  Otherwise the
  resolved value in ``data`` wins (last writer wins, because the replay is in HLC order).
  An update un-deletes the record, merging onto its pre-delete fields.  (Where the
  reference would compute garbage from a malformed intent, such as a non-number increment,
  we take the resolved value instead, the same on every replica);
* a delete tombstones the record and keeps its fields.

Since the order is fixed by the operations themselves, every replica that holds the same
operations reaches the same state, whatever order they arrived in.

``apply`` is the fast path for the common case, an operation newer than everything folded so
far: it does one replay step on the stored state instead of re-reading the whole log.  It
gives exactly what ``fold`` of the whole log would give.  When an operation is *not* newer
(it arrived out of HLC order), a single step is not enough, because an atomic op slotted into
the middle of a chain changes every later composed value.  ``apply`` then raises
``OutOfOrderError`` and the caller re-folds the record's operation log with the new op in it.
"""

from __future__ import annotations

from collections.abc import Iterable

from kora.core.atomic import apply_atomic_op
from kora.core.errors import LocalError, ValidationError
from kora.core.hlc import HLCTimestamp, utf16_key
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOpType, Operation, OpType
from kora.merge.record_state import RecordState

__all__ = ["OutOfOrderError", "RecordDraft", "apply", "fold", "is_newer"]

# Serialized HLCs are ``<15 digits>:<5 digits>:<node id>``: the first 22 characters order
# wall time and counter; only the node id needs the UTF-16 comparison.
_PREFIX = 22


class OutOfOrderError(LocalError):
    """``apply`` was given an operation that is not newer than the state: re-fold instead."""


def is_newer(state: RecordState | None, op: Operation, stamp: str | None = None) -> bool:
    """Whether ``op`` is strictly newer (HLC total order) than every op folded into ``state``.

    Args:
        state: The current state, or None for a record with no operations yet.
        op: The incoming operation.
        stamp: ``op.timestamp.serialize()``, when the caller has it already.

    Returns:
        True when ``apply(state, op)`` can take the fast path.
    """
    if state is None:
        return True
    return _later_than(op.timestamp, state.version, stamp)


def _later_than(ts: HLCTimestamp, version: str, serialized: str | None = None) -> bool:
    if serialized is None:
        serialized = ts.serialize()
    head, version_head = serialized[:_PREFIX], version[:_PREFIX]
    if head != version_head:
        return head > version_head
    return utf16_key(ts.node_id) > utf16_key(version[_PREFIX:])


def _order_key(op: Operation) -> tuple[tuple[int, int, bytes], str]:
    return (op.timestamp.sort_key(), op.id)


def fold(ops: Iterable[Operation]) -> RecordState | None:
    """Replay a record's operations, in any order and with duplicates, into its state.

    Args:
        ops: Operations of one record (same collection and record id).

    Returns:
        The state, or None when there are no operations.

    Raises:
        ValidationError: If the operations belong to more than one record.
    """
    unique = {op.id: op for op in ops}
    if not unique:
        return None
    ordered = sorted(unique.values(), key=_order_key)
    first = ordered[0]
    for op in ordered:
        if op.collection != first.collection or op.record_id != first.record_id:
            raise ValidationError(
                f"cannot fold operations of different records: "
                f"{first.collection}/{first.record_id} and {op.collection}/{op.record_id}"
            )
    fields: dict[str, JsonValue] = {}
    versions: dict[str, str] = {}
    atomic: dict[str, AtomicOpType] = {}
    deleted = False
    for op in ordered:
        deleted = _step(op, op.timestamp.serialize(), fields, versions, atomic, deleted)
    last = ordered[-1]
    return RecordState(
        collection=first.collection,
        record_id=first.record_id,
        fields=fields,
        field_versions=versions,
        field_atomic=atomic,
        deleted=deleted,
        version=last.timestamp.serialize(),
        created_version=first.timestamp.serialize(),
        last_op_id=last.id,
    )


def apply(state: RecordState | None, op: Operation, stamp: str | None = None) -> RecordState:
    """Append one operation that is newer than all of the record's operations.

    Gives the same state as ``fold`` over all the record's operations plus ``op``.
    Applying the operation that was applied last once more returns ``state`` unchanged.

    Args:
        state: The record's current state (None if it has no operations yet).
        op: An operation of the same record, newer (HLC) than ``state.version``.
        stamp: ``op.timestamp.serialize()``, when the caller has it already (a store
            that just checked and serialized the timestamp): not computed again.

    Returns:
        The new state.

    Raises:
        OutOfOrderError: If ``op`` is not newer than ``state.version``: the caller must
            re-fold the record's operation log including ``op`` (see ``fold``).
        ValidationError: If ``op`` belongs to another record.
    """
    if state is None:
        result = fold((op,))
        assert result is not None
        return result
    if op.id == state.last_op_id:
        return state
    if op.collection != state.collection or op.record_id != state.record_id:
        raise ValidationError(
            f"operation for {op.collection}/{op.record_id} applied to "
            f"{state.collection}/{state.record_id}"
        )
    version = op.timestamp.serialize() if stamp is None else stamp
    if not _later_than(op.timestamp, state.version, version):
        raise OutOfOrderError(
            f"operation {op.id} at {version} is not newer than the record's version "
            f"{state.version}: re-fold the record's operations"
        )
    fields = dict(state.fields)
    versions = dict(state.field_versions)
    atomic = dict(state.field_atomic)
    deleted = _step(op, version, fields, versions, atomic, state.deleted)
    return RecordState(
        collection=state.collection,
        record_id=state.record_id,
        fields=fields,
        field_versions=versions,
        field_atomic=atomic,
        deleted=deleted,
        version=version,
        created_version=state.created_version,
        last_op_id=op.id,
    )


class RecordDraft:
    """A record's state being built by a run of ``apply`` steps, in place.

    ``apply`` copies the state's three dicts and builds a new ``RecordState`` per operation,
    which is what an immutable state needs.  A transaction that applies many operations to
    one record (a burst of updates arriving together) needs only the final state: a draft
    copies the dicts once, takes each newer operation with one replay step on them, and
    ``freeze`` gives what the same ``apply`` calls would have given.
    """

    __slots__ = (
        "collection",
        "created_version",
        "deleted",
        "field_atomic",
        "field_versions",
        "fields",
        "last_op_id",
        "record_id",
        "version",
    )

    def __init__(self, state: RecordState) -> None:
        self.collection = state.collection
        self.record_id = state.record_id
        self.fields: dict[str, JsonValue] = dict(state.fields)
        self.field_versions: dict[str, str] = dict(state.field_versions)
        self.field_atomic: dict[str, AtomicOpType] = dict(state.field_atomic)
        self.deleted = state.deleted
        self.version = state.version
        self.created_version = state.created_version
        self.last_op_id = state.last_op_id

    def is_older_than(self, op: Operation, stamp: str) -> bool:
        """``is_newer(state, op, stamp)`` for the draft's state: ``apply_newer`` may take
        ``op`` (an operation of this record; ``stamp`` is its serialized timestamp)."""
        return _later_than(op.timestamp, self.version, stamp)

    def apply_newer(self, op: Operation, stamp: str) -> None:
        """``apply(state, op, stamp)``, in place, for an op ``is_older_than`` accepted and
        the caller checked belongs to this record (not already applied: its id is new)."""
        self.deleted = _step(
            op, stamp, self.fields, self.field_versions, self.field_atomic, self.deleted
        )
        self.version = stamp
        self.last_op_id = op.id

    def freeze(self) -> RecordState:
        """The state (it takes the draft's dicts: the draft is not to be used again)."""
        return RecordState(
            collection=self.collection,
            record_id=self.record_id,
            fields=self.fields,
            field_versions=self.field_versions,
            field_atomic=self.field_atomic,
            deleted=self.deleted,
            version=self.version,
            created_version=self.created_version,
            last_op_id=self.last_op_id,
        )


def _step(
    op: Operation,
    version: str,
    fields: dict[str, JsonValue],
    versions: dict[str, str],
    atomic: dict[str, AtomicOpType],
    deleted: bool,
) -> bool:
    """One replay step, in place on the three dicts; returns the new ``deleted`` flag."""
    data = op.data
    if op.type is OpType.DELETE:
        return True
    if data is None:
        # Mirrors the reference: an insert/update without data changes nothing at all.
        return deleted
    if op.type is OpType.INSERT:
        # The record becomes its data, every field a plain write: no atomic chain survives,
        # not even for a field the insert does not carry (spec 3.7).
        fields.clear()
        versions.clear()
        atomic.clear()
        fields.update(data)
        for name in data:
            versions[name] = version
        return False
    atomic_ops = op.atomic_ops
    for name, value in data.items():
        intent = atomic_ops.get(name) if atomic_ops else None
        if intent is None:
            fields[name] = value
            atomic.pop(name, None)
        else:
            if atomic.get(name) == intent.type:
                try:
                    value = apply_atomic_op(fields.get(name), intent)
                except ValidationError:
                    # A malformed intent (a non-number increment) from a peer must not
                    # break the fold: every replica falls back to the resolved value.
                    pass
            fields[name] = value
            atomic[name] = intent.type
        versions[name] = version
    return False
