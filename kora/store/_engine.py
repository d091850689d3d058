"""The logic both stores share: turning local mutations and remote operations into writes.

Theory of operation
-------------------

A store transaction is one synchronous function.  It asks the engine to *plan* the
transaction against a ``TxReader`` (synchronous reads inside the open transaction) and gets
back ``TxWrites``: the operations to append, the final state of every touched record, the
operations to enqueue, the version vector entries to raise and the clock to persist.  The
backend writes them (SQLite with ``executemany``, memory with dict updates) and commits;
only then does the store call ``Replica.committed(tx)`` to move its in-memory copies (version
vector, last local op per collection).  If anything raises before the commit, the backend
rolls back and the replica is untouched, so a sequence number is never burned.  The clock
may have ticked, which is harmless: it only ever moves forward.

The engine is the single place where semantics live, which is why ``SQLiteStore`` and
``MemoryStore`` pass the same contract suite.

Clock rebase (spec 3.8)
-----------------------

``plan_rebase`` re-stamps the queued operations that a fast clock stamped too far ahead of
the server's time.  The queue is in creation order and local timestamps only grow, so the
operations to re-stamp are a suffix of the queue: from the first one ahead of
``server time + 60 s`` to the end.  They are stamped again, in order, by an HLC that starts
at the newest timestamp the store holds within that limit (so each stays after everything it
was written after) and whose physical time is the server's.  Their ids change with the
timestamp; their causal deps go through the old-to-new mapping; sequence numbers stay, so
the rows are replaced, not added.  Their records are re-folded, since field versions are
timestamps.  The store's clock restarts from the new newest timestamp, and its physical
time is corrected by how far it ran ahead, so later writes are not ahead again.
"""

from __future__ import annotations

import json
import operator
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from json.encoder import c_encode_basestring  # type: ignore[attr-defined]
from typing import Final, Protocol

import attrs

from kora.core.atomic import apply_atomic_op
from kora.core.errors import InvalidTimestampError, RemoteClockDriftError, ValidationError
from kora.core.hlc import (
    MAX_INGEST_FUTURE_MS,
    MAX_LOGICAL,
    MAX_REMOTE_AHEAD_MS,
    MAX_WALL_TIME,
    HLCTimestamp,
    HybridLogicalClock,
)
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.merge import RecordDraft, RecordState, apply, fold, is_newer
from kora.store._fast_ops import (
    InsertBuilder,
    UpdateBuilder,
    build_operation,
    encode_sorted,
    new_hlc_timestamp,
    serialize_timestamp,
    slot_constructor,
)
from kora.store.errors import RecordExistsError, RecordNotFoundError
from kora.store.values import ChangeSet, LocalMutation, RemoteRejection

__all__ = [
    "MAX_CLOCK_LEAD_MS",
    "CorrectedClock",
    "RebaseWrites",
    "Replica",
    "TxReader",
    "TxWrites",
    "dumps",
]

#: How far ahead of the server's time a queued operation may be stamped (the server's own
#: limit, spec 8.4); further ahead, ``rebase_pending`` re-stamps it (spec 3.8).
MAX_CLOCK_LEAD_MS: Final = MAX_INGEST_FUTURE_MS

#: Compact JSON as stored (sorted keys); NaN and infinities are refused.
dumps = encode_sorted

RecordKey = tuple[str, str]


class TxReader(Protocol):
    """Synchronous reads inside the open transaction of a backend."""

    def load_record(self, collection: str, record_id: str) -> RecordState | None: ...

    def load_records(self, keys: Iterable[RecordKey]) -> dict[RecordKey, RecordState]:
        """The stored states of those of ``keys`` that exist (absent ones are left out)."""
        ...

    def load_record_ops(self, collection: str, record_id: str) -> list[Operation]: ...

    def known_op_ids(self, ids: Collection[str]) -> set[str]: ...

    def op_id_at(self, node_id: str, sequence_number: int) -> str | None: ...

    def last_local_op_id(self, node_id: str, collection: str) -> str | None: ...

    def queued_from_stamp(self, stamp: str) -> list[Operation]:
        """Queued operations, in queue order, from the first whose serialized timestamp is
        ``>= stamp`` to the end of the queue (empty when none is)."""
        ...

    def max_stamp_below(self, stamp: str, excluding: Collection[str]) -> str | None:
        """The greatest serialized timestamp ``< stamp`` of a stored operation whose id is
        not in ``excluding`` (None if there is none)."""
        ...


#: JSON columns of an operation, encoded once (and so validated) by the engine:
#: ``(serialized timestamp, data, previous data, atomic ops, causal deps)``.
EncodedOp = tuple[str, str | None, str | None, str | None, str]


#: One row of the op log as SQLite stores it (without the rowid): ``(id, node id, sequence
#: number, type, collection, record id, serialized timestamp, data, previous data, atomic ops,
#: causal deps, schema version, transaction id, mutation name)``, the JSON columns encoded
#: once (and so validated) by the engine.
OpRow = tuple[
    str, str, int, str, str, str, str, str | None, str | None, str | None, str, int,
    str | None, str | None,
]  # fmt: skip

_TYPE_TEXT: Final = {kind: kind.value for kind in OpType}
_second: Final = operator.itemgetter(1)


@attrs.define
class TxWrites:
    """Everything one transaction writes, in the order the backend must apply it."""

    ops: list[Operation] = attrs.field(factory=list)
    #: The op log row of each of ``ops``, in the same order.
    rows: list[OpRow] = attrs.field(factory=list)
    #: Every one of ``ops`` enters the outbound queue (a local write), in order.
    queued: bool = False
    #: How many of ``rows`` are plain local inserts: this node's, of the replica's schema
    #: version, no previous data or atomic ops (when all are, SQLite binds fewer columns).
    plain_inserts: int = 0
    #: Final state of every touched record, except the new ones in ``fresh``.
    records: dict[RecordKey, RecordState] = attrs.field(factory=dict)
    #: Records this transaction created with one insert and nothing else: the index of
    #: that insert in ``ops`` (and ``rows``, whose timestamp and data columns the record
    #: takes).  Their state is implied (see ``fresh_state``), so the hot path builds none
    #: (nor a tuple per record); SQLite writes the row directly.
    fresh: dict[RecordKey, int] = attrs.field(factory=dict)
    vv: dict[str, int] = attrs.field(factory=dict)
    last_local: dict[str, str] = attrs.field(factory=dict)
    clock_last: HLCTimestamp | None = None
    #: ``ops`` grouped by record, built on the first out-of-order merge, then kept current.
    pending_by_record: dict[RecordKey, list[Operation]] | None = None
    #: Set by a backend that numbers the op log (SQLite): the highest rowid before ``ops``,
    #: which then take the next ones in order.
    rowid_base: int | None = None

    def changes(self) -> ChangeSet:
        """The records this transaction (re)wrote."""
        keys = [*self.records, *self.fresh]
        collections = {key[0] for key in keys}
        if len(collections) == 1:  # the usual batch: one set of ids, built in C
            return ChangeSet.of({collections.pop(): set(map(_second, keys))})
        touched: dict[str, set[str]] = {}
        for collection, record_id in keys:
            touched.setdefault(collection, set()).add(record_id)
        return ChangeSet.of(touched)

    def all_states(self) -> dict[RecordKey, RecordState]:
        """Every touched record's final state, the fresh ones materialized."""
        states = dict(self.records)
        for key, index in self.fresh.items():
            states[key] = fresh_state(self.ops[index], self.rows[index][6])
        return states

    def current(self, key: RecordKey) -> RecordState | None:
        """The state this transaction gave a record so far (None if untouched)."""
        state = self.records.get(key)
        if state is None and key in self.fresh:
            index = self.fresh.pop(key)
            state = self.records[key] = fresh_state(self.ops[index], self.rows[index][6])
        return state


@attrs.define
class RebaseWrites:
    """What one clock rebase writes (see the module docstring).

    Attributes:
        replaced: ``(old id, new operation, its encoded columns)`` in queue order.
        records: The re-folded state of every record a re-stamped operation belongs to.
        clock: The clock to use from the commit on (None: keep the current one).
        clock_last: ``clock.last``, to persist when ``clock`` is set (None: nothing issued).
        correction_ms: The physical clock correction to use from the commit on.
        server_time_ms: The handshake's server time the rebase was planned for: the clock's
            reference offset (spec 3.3) is set from it once the rebase committed.
    """

    replaced: list[tuple[str, Operation, EncodedOp]] = attrs.field(factory=list)
    records: dict[RecordKey, RecordState] = attrs.field(factory=dict)
    clock: HybridLogicalClock | None = None
    clock_last: HLCTimestamp | None = None
    correction_ms: int = 0
    server_time_ms: int | None = None

    @property
    def writes_anything(self) -> bool:
        return bool(self.replaced) or self.clock is not None

    def id_map(self) -> dict[str, str]:
        return {old: op.id for old, op, _ in self.replaced}

    def changes(self) -> ChangeSet:
        touched: dict[str, set[str]] = {}
        for collection, record_id in self.records:
            touched.setdefault(collection, set()).add(record_id)
        return ChangeSet.of(touched)


class CorrectedClock:
    """The HLC's physical clock: a source of ms since the epoch plus a correction.

    The correction is 0 until a clock rebase finds the source more than
    ``MAX_CLOCK_LEAD_MS`` ahead of the server; it then brings the source back to the
    server's time, so later local writes are stamped near it.  It lives as long as the
    store is open; the first accepted handshake after a restart sets it again.
    """

    def __init__(self, source: Callable[[], int]) -> None:
        self._source = source
        self.correction_ms = 0

    def uncorrected(self) -> int:
        return int(self._source())

    def __call__(self) -> int:
        return int(self._source()) + self.correction_ms


def fresh_state(op: Operation, stamp: str) -> RecordState:
    """What ``kora.merge.apply(None, insert)`` gives, without the general machinery."""
    fields = op.data or {}
    return RecordState(
        collection=op.collection,
        record_id=op.record_id,
        fields=fields,
        field_versions=dict.fromkeys(fields, stamp),
        field_atomic={},
        deleted=False,
        version=stamp,
        created_version=stamp,
        last_op_id=op.id,
    )


#: ``RecordState(...)`` with its 9 fields positional, for values known valid.
_new_state: Final = slot_constructor(
    RecordState, ("c", "r", {"a": 1}, {"a": "v"}, {}, False, "v", "v", "i")
)


def _merge_plain_update(current: RecordState, op: Operation, stamp: str) -> RecordState | None:
    """What ``kora.merge.apply(current, op, stamp)`` gives for a plain update ``op`` (data,
    no atomic ops) of the live record ``current``, without the general machinery; None when
    ``op`` is not newer than ``current`` (the caller re-folds)."""
    data = op.data
    if data is None or op.id == current.last_op_id or not is_newer(current, op, stamp):
        return None
    atomic = current.field_atomic  # a state's mappings are never changed: shared as it is
    if atomic and not atomic.keys().isdisjoint(data):
        atomic = {name: kind for name, kind in atomic.items() if name not in data}
    return _new_state(
        current.collection, current.record_id, {**current.fields, **data},
        {**current.field_versions, **dict.fromkeys(data, stamp)}, atomic, False, stamp,
        current.created_version, op.id,
    )  # fmt: skip


def _load_named(
    reader: TxReader, mutations: Sequence[LocalMutation]
) -> dict[RecordKey, RecordState]:
    """The stored states of the records that ``mutations`` name (absent ones left out)."""
    return reader.load_records(
        {
            (m.collection, m.record_id)
            for m in mutations
            if type(m.collection) is str and type(m.record_id) is str
        }
    )


def _uuid7_run() -> Iterator[str]:
    """Record ids for one transaction: UUIDv7 (RFC 9562) of this millisecond whose 73 random
    bits start at random and then count, as section 6.2 method 2 allows.

    Cheaper than ``kora.core.ids.uuid7`` per id.  The run is strictly increasing; ids of
    separate runs (and of ``uuid7``) within one millisecond are unique but not ordered.
    The top bit of ``rand_b`` starts clear, so counting never reaches the variant bits.
    """
    ms = (time.time_ns() // 1_000_000) % (1 << 48)
    high = f"{(ms << 16) | (0x7 << 12) | secrets.randbits(12):016x}"
    head = f"{high[:8]}-{high[8:12]}-{high[12:]}-"
    low = (0b10 << 62) | secrets.randbits(61)
    while True:
        text = hex(low)  # "0x" and 16 digits: the variant bits make the top digit 8 to b
        yield f"{head}{text[2:6]}-{text[6:]}"
        low += 1


def _deps_json(deps: Sequence[str]) -> str:
    # Local op ids are hex digests: nothing to escape.
    return '["' + '","'.join(deps) + '"]' if deps else "[]"


def _encode_atomic(atomic: Mapping[str, AtomicOp] | None) -> str | None:
    if not atomic:
        return None
    return dumps({name: {"type": str(op.type), "value": op.value} for name, op in atomic.items()})


def decode_atomic(text: str | None) -> dict[str, AtomicOp] | None:
    if text is None:
        return None
    raw = json.loads(text)
    return {name: AtomicOp(AtomicOpType(v["type"]), v["value"]) for name, v in raw.items()}


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{kind} must be a non-empty string, got {value!r}")
    return value


def _encode(value: object, what: str) -> str:
    return encode_sorted(value, what)


class Replica:
    """The node's in-memory state between transactions, and the planner of transactions.

    Args:
        node_id: This node's id.
        clock: This node's HLC (ticked only inside transactions, so never concurrently).
        version_vector: Highest sequence number stored per node, as loaded at open.
        physical: The clock's physical time source (its correction moves on a rebase).
        schema_version: The app schema version stamped on local operations.
    """

    def __init__(
        self,
        node_id: str,
        clock: HybridLogicalClock,
        version_vector: Mapping[str, int],
        *,
        physical: CorrectedClock,
        schema_version: int = 1,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.physical = physical
        self.vv: dict[str, int] = dict(version_vector)
        self.schema_version = schema_version
        self._last_local: dict[str, str | None] = {}

    # ------------------------------------------------------------------ local writes

    def plan_local(
        self,
        reader: TxReader,
        mutations: Sequence[LocalMutation],
        transaction_id: str | None,
    ) -> TxWrites:
        """Turn local mutations into one transaction's writes.

        The hot path is a batch of inserts of new records: their timestamps are consecutive
        ticks of the clock (it reads the physical time once per transaction, then counts;
        the transaction commits as one), their ids one run of UUIDv7, and their operations
        and rows are built directly (``InsertBuilder``).

        Raises:
            ValidationError: A mutation is malformed.
            RecordNotFoundError: An update or delete of a missing or deleted record.
            RecordExistsError: An insert of an id that is live.
        """
        if transaction_id is not None:
            _check_name("transaction_id", transaction_id)
        tx = TxWrites(queued=True)
        node = self.node_id
        seq = self.vv.get(node, 0)
        schema_version = self.schema_version
        previous_in_tx: str | None = None
        records = tx.records
        fresh = tx.fresh
        last_local = tx.last_local
        ops = tx.ops
        rows = tx.rows
        builders: dict[str, InsertBuilder] = {}
        update_builders: dict[str, UpdateBuilder] = {}
        # Per record, the last plain update of this transaction and its data's JSON.
        last_plain: dict[RecordKey, tuple[Operation, str]] = {}
        # The records the mutations name, read in one query when the first one is needed
        # (the app names the records it inserts: one point query each would cost more than
        # everything else about an insert).  This transaction's own changes take precedence.
        stored: dict[RecordKey, RecordState] | None = None
        record_ids: Iterator[str] | None = None
        insert = OpType.INSERT
        update = OpType.UPDATE
        # The clock: ``now()`` for the first operation, then consecutive ticks.
        wall = logical = -1
        plain = 0
        wall_prefix = ""
        node_suffix = ":" + node
        for mutation in mutations:
            collection = mutation.collection
            if type(collection) is not str or not collection:
                _check_name("collection", collection)
            op_type = mutation.type
            record_id = mutation.record_id
            current: RecordState | None
            if record_id is None:
                if op_type is not insert:
                    raise ValidationError(f"{op_type} needs a record_id")
                if record_ids is None:
                    record_ids = _uuid7_run()
                record_id = next(record_ids)
                current = None  # a fresh UUIDv7 cannot name an existing record
                key = (collection, record_id)
            else:
                _check_name("record_id", record_id)
                key = (collection, record_id)
                current = tx.current(key)
                if current is None:
                    if stored is None:
                        stored = _load_named(reader, mutations)
                    current = stored.get(key)

            last_here = last_local.get(collection) or self._last_local_op(reader, collection)
            deps: tuple[str, ...]
            if transaction_id is None or previous_in_tx is None or previous_in_tx == last_here:
                deps = () if last_here is None else (last_here,)
            else:
                deps = (previous_in_tx,) if last_here is None else (last_here, previous_in_tx)

            if wall < 0:
                first = self.clock.now()
                wall, logical = first.wall_time, first.logical
                wall_prefix = f"{wall:015d}:"
            else:
                logical += 1
                if logical > MAX_LOGICAL:  # as the clock does: borrow a millisecond
                    wall, logical = wall + 1, 0
                    wall_prefix = f"{wall:015d}:"
            timestamp = new_hlc_timestamp(wall, logical, node)
            stamp = wall_prefix + str(logical).zfill(5) + node_suffix
            seq += 1
            data = mutation.data
            if op_type is insert and current is None and type(data) is dict and not mutation.atomic:
                builder = builders.get(collection)
                if builder is None:
                    builder = builders[collection] = InsertBuilder(
                        node, collection, schema_version, transaction_id
                    )
                op = builder.build(
                    record_id, data, timestamp, stamp, seq, deps, mutation.mutation_name,
                    mutation.record_id is None,
                )  # fmt: skip
                fresh[key] = len(ops)
                plain += 1
                row: OpRow = (op.id, node, seq, "insert", collection, record_id, stamp,
                              builder.text, None, None, _deps_json(deps), schema_version,
                              transaction_id, op.mutation_name)  # fmt: skip
            elif (
                op_type is update
                and current is not None
                and not current.deleted
                and type(data) is dict
                and data
                and not mutation.atomic
            ):
                # A plain update of a live record: its operation built directly, the record's
                # new state merged directly (a transaction that updates one record 1,000
                # times does this 1,000 times; only the final state is written).
                updater = update_builders.get(collection)
                if updater is None:
                    updater = update_builders[collection] = UpdateBuilder(
                        node, collection, schema_version, transaction_id
                    )
                old = current.fields
                before = {name: old[name] for name in data if name in old}
                op = updater.build(
                    record_id, data, before, timestamp, stamp, seq, deps, mutation.mutation_name
                )
                merged = _merge_plain_update(current, op, stamp)
                records[key] = self._merge(reader, tx, current, op) if merged is None else merged
                # The previous data of an update of the same fields as the record's newest
                # operation, a plain update, is that update's data: its JSON is known.
                last = last_plain.get(key)
                if (
                    last is not None
                    and last[0].id == current.last_op_id
                    and data.keys() == last[0].data.keys()  # type: ignore[union-attr]
                ):
                    before_text = last[1]
                else:
                    before_text = dumps(before)
                last_plain[key] = (op, updater.text)
                row = (op.id, node, seq, "update", collection, record_id, stamp, updater.text,
                       before_text, None, _deps_json(deps), schema_version, transaction_id,
                       op.mutation_name)  # fmt: skip
            else:
                op, data_text, previous = self._build_local(
                    reader, tx, mutation, collection, record_id, current, timestamp, seq, deps,
                    transaction_id,
                )  # fmt: skip
                if current is None and data_text is not None and op_type is insert:
                    fresh[key] = len(ops)
                else:
                    records[key] = self._merge(reader, tx, current, op)
                row = (op.id, node, seq, _TYPE_TEXT[op.type], collection, record_id, stamp,
                       data_text, None if previous is None else dumps(previous),
                       _encode_atomic(op.atomic_ops), _deps_json(deps), schema_version,
                       transaction_id, op.mutation_name)  # fmt: skip
            ops.append(op)
            rows.append(row)
            if tx.pending_by_record is not None:
                tx.pending_by_record.setdefault(key, []).append(op)
            last_local[collection] = previous_in_tx = op.id
        if ops:
            tx.plain_inserts = plain
            tx.vv[node] = seq
            self.clock.advance_to(new_hlc_timestamp(wall, logical, node))
            tx.clock_last = self.clock.last
        return tx

    def _build_local(
        self,
        reader: TxReader,
        tx: TxWrites,
        mutation: LocalMutation,
        collection: str,
        record_id: str,
        current: RecordState | None,
        timestamp: HLCTimestamp,
        seq: int,
        deps: tuple[str, ...],
        transaction_id: str | None,
    ) -> tuple[Operation, str | None, dict[str, JsonValue] | None]:
        """Any local operation: the operation, its data's JSON and its previous data."""
        op_type = mutation.type
        atomic_ops: dict[str, AtomicOp] | None = None
        previous: dict[str, JsonValue] | None = None
        data: Mapping[str, JsonValue] | None
        if op_type is OpType.INSERT:
            if current is not None and not current.deleted:
                raise RecordExistsError(f"{collection}/{record_id} already exists")
            data = mutation.data  # build_operation copies it
            if (type(data) is not dict and not isinstance(data, Mapping)) or mutation.atomic:
                raise ValidationError("an insert needs data (a mapping) and no atomic ops")
        elif op_type is OpType.UPDATE:
            if current is None or current.deleted:
                raise RecordNotFoundError(f"cannot update {collection}/{record_id}: not found")
            changed = dict(mutation.data or {})
            if mutation.atomic:
                atomic_ops = dict(mutation.atomic)
                for name, intent in atomic_ops.items():
                    if name in changed:
                        raise ValidationError(f"field {name!r} is both set and atomic")
                    changed[name] = apply_atomic_op(current.fields.get(name), intent)
            if not changed:
                raise ValidationError("an update must change at least one field")
            old = current.fields
            previous = {name: old[name] for name in changed if name in old}
            data = changed
        elif op_type is OpType.DELETE:
            if current is None or current.deleted:
                raise RecordNotFoundError(f"cannot delete {collection}/{record_id}: not found")
            if mutation.data is not None or mutation.atomic:
                raise ValidationError("a delete carries no data")
            data = None
        else:
            raise ValidationError(f"unknown operation type {op_type!r}")
        op, data_text, _ = build_operation(
            node_id=self.node_id, op_type=op_type, collection=collection, record_id=record_id,
            data=data, previous_data=previous, timestamp=timestamp, sequence_number=seq,
            causal_deps=deps, schema_version=self.schema_version,
            atomic_ops=atomic_ops, transaction_id=transaction_id,
            mutation_name=mutation.mutation_name,
        )  # fmt: skip
        return op, data_text, previous

    def _last_local_op(self, reader: TxReader, collection: str) -> str | None:
        if collection not in self._last_local:
            self._last_local[collection] = reader.last_local_op_id(self.node_id, collection)
        return self._last_local[collection]

    # ----------------------------------------------------------------- remote writes

    def plan_remote(
        self, reader: TxReader, ops: Iterable[Operation]
    ) -> tuple[TxWrites, int, list[RemoteRejection]]:
        """Plan the application of remote operations; never raises for one bad operation.

        The clock receives the batch's newest timestamp once, at the end; each operation is
        checked for drift against the physical time read at the start, as ``receive`` would
        (the first operation a never-ticked clock receives is exempt, as there).

        Returns:
            The writes (``tx.ops`` are the newly applied operations), the number of
            duplicates, and the refused operations.
        """
        batch = list(ops)
        tx = TxWrites()
        rejected: list[RemoteRejection] = []
        ids = {op.id for op in batch if type(op.id) is str}
        known = reader.known_op_ids(ids)
        # The record of each operation (built once: every tuple made here is work for the
        # garbage collector), and every record the batch may touch in one read.
        keys = [(op.collection, op.record_id) for op in batch]
        stored = reader.load_records(
            {key for key in keys if type(key[0]) is str and type(key[1]) is str}
        )
        # Ids stored or taken by this batch: a second one is a duplicate.  Without stored
        # ones and repeated ones, there is nothing to look up per operation.
        seen: set[str] = set(known)
        dedupe = bool(known) or len(ids) != len(batch)
        # (node, sequence number) -> id of this batch's operations, built only when an
        # operation does not come after everything of its node (rare: out of order).
        claimed: dict[tuple[str, int], str] | None = None
        duplicates = 0
        clock = self.clock
        exempt = clock.last is None and clock.reference_offset is None
        drift_limit = clock.corrected_physical_time() + MAX_REMOTE_AHEAD_MS
        newest: HLCTimestamp | None = None
        newest_wall = newest_logical = -1
        vv = self.vv
        tx_vv = tx.vv  # only ever above ``vv``: the highest sequence number of the batch
        records = tx.records
        # Records taking a run of newer operations, in place (see ``RecordDraft``): their
        # states in ``records`` are stale until the drafts are frozen at the end.
        drafts: dict[RecordKey, RecordDraft] = {}
        ops_out = tx.ops
        rows = tx.rows
        for op, key in zip(batch, keys, strict=True):
            op_id = op.id
            if dedupe and op_id in seen:
                duplicates += 1
                continue
            try:
                row = _plain_remote_row(op)
                if row is None:
                    row = _check_remote(op)
                node, seq = row[1], row[2]
                if seq <= (tx_vv.get(node) or vv.get(node, 0)):
                    # Not above all this node's operations we hold: the number may be taken.
                    if claimed is None:
                        claimed = {(r[1], r[2]): r[0] for r in rows}
                    holder = claimed.get((node, seq))
                    if holder is None and seq <= vv.get(node, 0):
                        holder = reader.op_id_at(node, seq)
                    if holder is not None and holder != op_id:
                        raise _Conflict(
                            f"sequence {seq} of node {node} is already held by {holder}"
                        )
                timestamp = op.timestamp
                wall = timestamp.wall_time
                if exempt:
                    exempt = False
                elif wall > drift_limit:
                    raise RemoteClockDriftError(
                        f"remote timestamp {wall} is {wall - drift_limit} ms beyond the "
                        f"allowed {MAX_REMOTE_AHEAD_MS} ms ahead of local time"
                    )
            except InvalidTimestampError as exc:
                rejected.append(RemoteRejection(op, "INVALID_TIMESTAMP", str(exc), False))
                continue
            except RemoteClockDriftError as exc:
                rejected.append(RemoteRejection(op, "CLOCK_DRIFT", str(exc), True))
                continue
            except _Conflict as exc:
                rejected.append(RemoteRejection(op, "SEQUENCE_CONFLICT", str(exc), False))
                continue
            except ValidationError as exc:
                rejected.append(RemoteRejection(op, "INVALID_OPERATION", str(exc), False))
                continue
            if wall > newest_wall or (wall == newest_wall and timestamp.logical > newest_logical):
                newest, newest_wall, newest_logical = timestamp, wall, timestamp.logical
            if dedupe:
                seen.add(op_id)
            if claimed is not None:
                claimed[(node, seq)] = op_id
            draft = drafts.get(key) if drafts else None
            if draft is not None and draft.is_older_than(op, row[6]):
                # The usual update: newer than the record (row[6] is the checked timestamp,
                # serialized: the merge need not serialize it twice more).
                draft.apply_newer(op, row[6])
            else:
                if draft is not None:  # out of order: the general path needs the state
                    records[key] = drafts.pop(key).freeze()
                self._plan_state(reader, tx, op, key, row, stored, drafts)
            ops_out.append(op)
            rows.append(row)
            if tx.pending_by_record is not None:
                tx.pending_by_record.setdefault(key, []).append(op)
            if seq > (tx_vv.get(node) or vv.get(node, 0)):
                tx_vv[node] = seq
        for key, draft in drafts.items():
            records[key] = draft.freeze()
        if newest is not None:
            try:
                clock.receive(newest)
            except RemoteClockDriftError:
                # Physical time stepped back during the batch: still never behind what we hold.
                clock.advance_to(newest)
            tx.clock_last = clock.last
        return tx, duplicates, rejected

    def _plan_state(
        self,
        reader: TxReader,
        tx: TxWrites,
        op: Operation,
        key: RecordKey,
        row: OpRow,
        stored: Mapping[RecordKey, RecordState],
        drafts: dict[RecordKey, RecordDraft],
    ) -> None:
        """Fold ``op`` (row ``row``, not yet in ``tx.ops``) into its record's state, the
        record having no draft: fresh, a new draft, or the general merge."""
        records = tx.records
        current = records.get(key) if records else None
        if current is None:
            current = tx.current(key) if key in tx.fresh else stored.get(key)
        if current is None and row[7] is not None and op.type is OpType.INSERT:
            # A new record from one insert: its state is implied (``fresh_state``, which is
            # what ``apply(None, op)`` gives: an insert ignores atomic ops).
            tx.fresh[key] = len(tx.ops)
        elif current is not None and is_newer(current, op, row[6]):
            # Newer than the record: the first of what may be a run of updates.
            draft = drafts[key] = RecordDraft(current)
            draft.apply_newer(op, row[6])
        else:
            records[key] = self._merge(reader, tx, current, op)

    # ------------------------------------------------------------------- clock rebase

    def plan_rebase(self, reader: TxReader, server_time_ms: int) -> RebaseWrites:
        """Plan re-stamping the queued operations stamped too far ahead (spec 3.8).

        Raises:
            ValidationError: ``server_time_ms`` is not a non-negative int of ms.
        """
        if type(server_time_ms) is not int or not 0 <= server_time_ms < MAX_WALL_TIME:
            raise ValidationError(f"server time must be an int of ms >= 0, got {server_time_ms!r}")
        limit = server_time_ms + MAX_CLOCK_LEAD_MS
        lead = self.physical.uncorrected() - server_time_ms
        writes = RebaseWrites(
            correction_ms=-lead if lead > MAX_CLOCK_LEAD_MS else 0, server_time_ms=server_time_ms
        )
        last = self.clock.last
        # Everything this node holds is at or below its clock: nothing can be ahead if it is not.
        if last is None or last.wall_time <= limit or limit + 1 >= MAX_WALL_TIME:
            return writes
        ahead = f"{limit + 1:015d}"
        queued = reader.queued_from_stamp(ahead)
        floor = reader.max_stamp_below(ahead, {op.id for op in queued})
        restamp = HybridLogicalClock(
            self.node_id,
            lambda: server_time_ms,
            last=None if floor is None else HLCTimestamp.parse(floor),
        )
        renamed: dict[str, str] = {}
        for op in queued:
            deps = tuple(renamed.get(dep, dep) for dep in op.causal_deps)
            new, data_text, stamp = build_operation(
                node_id=op.node_id, op_type=op.type, collection=op.collection,
                record_id=op.record_id, data=op.data, previous_data=op.previous_data,
                timestamp=restamp.now(), sequence_number=op.sequence_number, causal_deps=deps,
                schema_version=op.schema_version, atomic_ops=op.atomic_ops,
                transaction_id=op.transaction_id, mutation_name=op.mutation_name,
            )  # fmt: skip
            renamed[op.id] = new.id
            encoded: EncodedOp = (
                stamp,
                data_text,
                None if op.previous_data is None else dumps(op.previous_data),
                _encode_atomic(op.atomic_ops),
                _deps_json(list(deps)),
            )
            writes.replaced.append((op.id, new, encoded))
        replacements = {old: new for old, new, _ in writes.replaced}
        for key in dict.fromkeys((op.collection, op.record_id) for op in queued):
            stored = reader.load_record_ops(*key)
            state = fold(replacements.get(op.id, op) for op in stored)
            assert state is not None
            writes.records[key] = state
        writes.clock = HybridLogicalClock(self.node_id, self.physical, last=restamp.last)
        writes.clock_last = restamp.last
        return writes

    def committed_rebase(self, writes: RebaseWrites) -> None:
        """Publish a committed rebase: the new clock, its correction, renamed last ops."""
        self.physical.correction_ms = writes.correction_ms
        if writes.clock is not None:
            self.clock = writes.clock
        if writes.server_time_ms is not None:
            # serverTime - localTime (spec 3.3), on whichever clock is current: a clock that
            # runs behind the server must still accept what the server relays from clocks
            # that do not (without it, a device 5 minutes slow refused every newer remote
            # operation with CLOCK_DRIFT).
            self.clock.set_reference_offset(writes.server_time_ms - self.physical())
        renamed = writes.id_map()
        for collection, op_id in self._last_local.items():
            if op_id is not None and op_id in renamed:
                self._last_local[collection] = renamed[op_id]

    # ------------------------------------------------------------------------ shared

    def _merge(
        self, reader: TxReader, tx: TxWrites, current: RecordState | None, op: Operation
    ) -> RecordState:
        stamp = op.timestamp.serialize()  # once for both: it validates as it serializes
        if is_newer(current, op, stamp):
            return apply(current, op, stamp)
        # Out of HLC order: re-fold the record's whole log, this transaction's ops included.
        key = (op.collection, op.record_id)
        stored = reader.load_record_ops(*key)
        if tx.ops and tx.pending_by_record is None:
            tx.pending_by_record = {}
            for earlier in tx.ops:
                tx.pending_by_record.setdefault((earlier.collection, earlier.record_id), []).append(
                    earlier
                )
        pending = tx.pending_by_record.get(key, []) if tx.pending_by_record else []
        state = fold([*stored, *pending, op])
        assert state is not None
        return state

    def committed(self, tx: TxWrites) -> None:
        """Publish a committed transaction into the in-memory copies."""
        for node, seq in tx.vv.items():
            if seq > self.vv.get(node, 0):
                self.vv[node] = seq
        self._last_local.update(tx.last_local)


def _plain_remote_row(op: Operation) -> OpRow | None:
    """The op log row of a remote operation of the common shape (exact types, no atomic ops,
    at most one dependency), checked as ``_check_remote`` checks
    it; None for anything else, which takes ``_check_remote``.

    Raises:
        ValidationError: The data is not JSON.
    """
    # One name at a time: a multiple assignment of more than three builds a tuple.
    op_id = op.id
    node = op.node_id
    collection = op.collection
    record_id = op.record_id
    seq = op.sequence_number
    timestamp = op.timestamp
    data = op.data
    previous = op.previous_data
    deps = op.causal_deps
    kind = op.type
    if not (
        type(op_id) is str
        and type(node) is str
        and type(collection) is str
        and type(record_id) is str
        and op_id
        and node
        and collection
        and record_id
        and type(kind) is OpType
        and type(seq) is int
        and seq >= 0
        and type(timestamp) is HLCTimestamp
        and op.atomic_ops is None
        and (data is None or type(data) is dict)
        and (previous is None or type(previous) is dict)
        and type(deps) is tuple
        and len(deps) <= 1
    ):
        return None
    wall = timestamp.wall_time
    logical = timestamp.logical
    stamp_node = timestamp.node_id
    if not (
        type(wall) is int
        and type(logical) is int
        and 0 <= wall < MAX_WALL_TIME
        and 0 <= logical <= MAX_LOGICAL
        and type(stamp_node) is str
    ):
        return None
    if deps:
        dep = deps[0]
        if type(dep) is not str:
            return None
        deps_text = f"[{c_encode_basestring(dep)}]"  # what the encoder writes for [dep]
    else:
        deps_text = "[]"
    return (
        op_id, node, seq, _TYPE_TEXT[kind], collection, record_id,
        f"{wall:015d}:{logical:05d}:{stamp_node}",
        None if data is None else _encode(data, "data"),
        None if previous is None else _encode(previous, "previousData"),
        None, deps_text, op.schema_version, op.transaction_id, op.mutation_name,
    )  # fmt: skip


def _check_remote(op: Operation) -> OpRow:
    """Validate a remote operation of any shape; its op log row.

    Raises:
        ValidationError, InvalidTimestampError: See ``Replica.plan_remote``.
    """
    for kind in ("id", "node_id", "collection", "record_id"):
        _check_name(kind, getattr(op, kind))
    if not isinstance(op.type, OpType):
        raise ValidationError(f"unknown operation type {op.type!r}")
    seq = op.sequence_number
    if type(seq) is not int or seq < 0:
        raise ValidationError(f"invalid sequence number {seq!r}")
    if not isinstance(op.timestamp, HLCTimestamp):
        raise InvalidTimestampError(f"not an HLC timestamp: {op.timestamp!r}")
    op.timestamp.validate()
    if op.data is not None and not isinstance(op.data, Mapping):
        raise ValidationError("operation data must be an object or null")
    if op.previous_data is not None and not isinstance(op.previous_data, Mapping):
        raise ValidationError("operation previousData must be an object or null")
    if op.atomic_ops is not None and not all(
        isinstance(v, AtomicOp) for v in op.atomic_ops.values()
    ):
        raise ValidationError("atomicOps must map fields to atomic ops")
    return (
        op.id, op.node_id, seq, _TYPE_TEXT[op.type], op.collection, op.record_id,
        serialize_timestamp(op.timestamp),  # validated just above
        None if op.data is None else _encode(op.data, "data"),
        None if op.previous_data is None else _encode(op.previous_data, "previousData"),
        _encode_atomic(op.atomic_ops),
        _encode(list(op.causal_deps), "causalDeps"),
        op.schema_version, op.transaction_id, op.mutation_name,
    )  # fmt: skip


class _Conflict(Exception):
    """Two different operations claim one (node, sequence number)."""
