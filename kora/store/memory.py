"""``MemoryStore``: the same semantics as ``SQLiteStore``, kept in dicts, gone at close.

For tests, simulations and examples.  Transactions are planned by the same engine as
SQLite's (``kora.store._engine``) and applied to the dicts only when planning succeeded, so
a failing write leaves nothing behind.  Every method is a checkpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager

import trio

from kora.core.errors import ClosedError
from kora.core.hlc import HLCTimestamp, HybridLogicalClock, system_clock_ms
from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.merge import RecordState
from kora.store import _query
from kora.store._engine import CorrectedClock, RebaseWrites, Replica, TxWrites
from kora.store.base import MAX_WATERMARK_VIEWS, Store, check_meta_item, check_watermark
from kora.store.values import (
    ApplyResult,
    LocalMutation,
    Order,
    Record,
    RejectedOperation,
    StoreStatistics,
    Where,
)

__all__ = ["MemoryStore", "open_memory_store"]


def _record(state: RecordState) -> Record:
    return Record(
        collection=state.collection,
        id=state.record_id,
        fields=dict(state.fields),
        deleted=state.deleted,
        version=state.version,
        created_version=state.created_version,
        field_versions=dict(state.field_versions),
    )


class MemoryStore(Store):
    """A store in memory.  Use ``open_memory_store``."""

    def __init__(self, replica: Replica, physical_clock: Callable[[], int]) -> None:
        super().__init__()
        self._replica = replica
        self._physical_clock = physical_clock
        self._ops: dict[str, Operation] = {}
        self._by_node_seq: dict[tuple[str, int], str] = {}
        self._by_record: dict[tuple[str, str], list[str]] = {}
        self._records: dict[str, dict[str, RecordState]] = {}
        self._outbound: dict[str, None] = {}
        self._rejected: dict[str, RejectedOperation] = {}
        self._watermarks: dict[str, int] = {}
        self._meta: dict[str, str] = {}
        self._closed = False

    # ------------------------------------------------------------- TxReader

    def load_record(self, collection: str, record_id: str) -> RecordState | None:
        return self._records.get(collection, {}).get(record_id)

    def load_records(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RecordState]:
        found: dict[tuple[str, str], RecordState] = {}
        for key in keys:
            state = self.load_record(*key)
            if state is not None:
                found[key] = state
        return found

    def load_record_ops(self, collection: str, record_id: str) -> list[Operation]:
        return [self._ops[i] for i in self._by_record.get((collection, record_id), ())]

    def known_op_ids(self, ids: Iterable[str]) -> set[str]:
        return {i for i in ids if i in self._ops}

    def op_id_at(self, node_id: str, sequence_number: int) -> str | None:
        return self._by_node_seq.get((node_id, sequence_number))

    def last_local_op_id(self, node_id: str, collection: str) -> str | None:
        mine = [
            op for op in self._ops.values() if op.node_id == node_id and op.collection == collection
        ]
        return max(mine, key=lambda op: op.sequence_number).id if mine else None

    def queued_from_stamp(self, stamp: str) -> list[Operation]:
        queued = [self._ops[op_id] for op_id in self._outbound]
        for index, op in enumerate(queued):
            if op.timestamp.serialize() >= stamp:
                return queued[index:]
        return []

    def max_stamp_below(self, stamp: str, excluding: Collection[str]) -> str | None:
        stamps = [
            serialized
            for op in self._ops.values()
            if op.id not in excluding and (serialized := op.timestamp.serialize()) < stamp
        ]
        return max(stamps, default=None)

    # ------------------------------------------------------------- plumbing

    async def _enter(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise ClosedError("the store is closed")

    def _commit(self, tx: TxWrites) -> None:
        for op in tx.ops:
            self._ops[op.id] = op
            self._by_node_seq[(op.node_id, op.sequence_number)] = op.id
            self._by_record.setdefault((op.collection, op.record_id), []).append(op.id)
        for (collection, record_id), state in tx.all_states().items():
            self._records.setdefault(collection, {})[record_id] = state
        if tx.queued:
            for op in tx.ops:
                self._outbound[op.id] = None
        self._replica.committed(tx)

    def _commit_rebase(self, writes: RebaseWrites) -> None:
        for old_id, op, _ in writes.replaced:
            del self._ops[old_id]
            self._ops[op.id] = op
            self._by_node_seq[(op.node_id, op.sequence_number)] = op.id
            ids = self._by_record[(op.collection, op.record_id)]
            ids[ids.index(old_id)] = op.id
        renamed = writes.id_map()
        self._outbound = {renamed.get(op_id, op_id): None for op_id in self._outbound}
        for (collection, record_id), state in writes.records.items():
            self._records.setdefault(collection, {})[record_id] = state
        self._replica.committed_rebase(writes)

    # ------------------------------------------------------------- identity

    @property
    def node_id(self) -> str:
        return self._replica.node_id

    async def last_timestamp(self) -> HLCTimestamp | None:
        await self._enter()
        return self._replica.clock.last

    # --------------------------------------------------------------- writes

    async def write_local_many(
        self, mutations: Sequence[LocalMutation], *, transaction_id: str | None = None
    ) -> list[Operation]:
        await self._enter()
        tx = self._replica.plan_local(self, list(mutations), transaction_id)
        self._commit(tx)
        self._notify(tx.changes())
        self._notify_queued(tx.ops)
        return tx.ops

    async def apply_remote(
        self,
        operations: Iterable[Operation],
        *,
        watermark: tuple[str, int] | None = None,
        before_commit: Callable[[], object] | None = None,
    ) -> ApplyResult:
        # before_commit is not called: the memory store's "commit" holds the GIL throughout.
        if watermark is not None:
            check_watermark(watermark[1])
        await self._enter()
        tx, duplicates, rejected = self._replica.plan_remote(self, list(operations))
        self._commit(tx)
        if watermark is not None and not any(r.retriable for r in rejected):
            self._set_watermark(*watermark)
        result = ApplyResult(
            applied=tuple(tx.ops),
            duplicates=duplicates,
            rejected=tuple(rejected),
            changes=tx.changes(),
        )
        self._notify(result.changes)
        return result

    # -------------------------------------------------------------- records

    async def get(
        self, collection: str, record_id: str, *, include_deleted: bool = False
    ) -> Record | None:
        await self._enter()
        state = self.load_record(collection, record_id)
        if state is None or (state.deleted and not include_deleted):
            return None
        return _record(state)

    def _select(self, spec: _query.QuerySpec) -> list[RecordState]:
        states = self._records.get(spec.collection, {})
        return [
            state
            for record_id, state in states.items()
            if (spec.include_deleted or not state.deleted)
            and _query.matches(spec, record_id, state.fields)
        ]

    async def query(
        self,
        collection: str,
        where: Sequence[Where] = (),
        order_by: Sequence[Order] = (),
        *,
        limit: int | None = None,
        offset: int = 0,
        include_deleted: bool = False,
    ) -> list[Record]:
        spec = _query.query_spec(collection, where, order_by, limit, offset, include_deleted)
        await self._enter()
        by_id = {state.record_id: state for state in self._select(spec)}
        rows = _query.sort_rows(spec, [(i, s.fields) for i, s in by_id.items()])
        return [_record(by_id[record_id]) for record_id, _ in _query.window(spec, rows)]

    async def count(
        self, collection: str, where: Sequence[Where] = (), *, include_deleted: bool = False
    ) -> int:
        spec = _query.query_spec(collection, where, (), None, 0, include_deleted)
        await self._enter()
        return len(self._select(spec))

    # ------------------------------------------------------------------ log

    async def operations_in_range(
        self, node_id: str, from_sequence: int, to_sequence: int
    ) -> list[Operation]:
        await self._enter()
        found = [
            self._ops[op_id]
            for (node, seq), op_id in self._by_node_seq.items()
            if node == node_id and from_sequence <= seq <= to_sequence
        ]
        return sorted(found, key=lambda op: op.sequence_number)

    async def operations_for_record(self, collection: str, record_id: str) -> list[Operation]:
        await self._enter()
        ops = self.load_record_ops(collection, record_id)
        return sorted(ops, key=lambda op: (op.timestamp.sort_key(), op.id))

    async def version_vector(self) -> VersionVector:
        await self._enter()
        return VersionVector(dict(self._replica.vv))

    # ------------------------------------------------------- outbound queue

    async def pending(self, limit: int | None = None) -> list[Operation]:
        await self._enter()
        ids = list(self._outbound)
        if limit is not None:
            ids = ids[: max(limit, 0)]
        return [self._ops[op_id] for op_id in ids]

    async def pending_count(self) -> int:
        await self._enter()
        return len(self._outbound)

    async def acknowledge(self, op_ids: Iterable[str], *, power_safe: bool = True) -> int:
        await self._enter()
        removed = 0
        for op_id in dict.fromkeys(op_ids):
            if op_id in self._outbound:
                del self._outbound[op_id]
                removed += 1
        return removed

    async def reject(
        self, op_id: str, *, code: str, message: str, retriable: bool
    ) -> RejectedOperation | None:
        await self._enter()
        if op_id not in self._ops:
            return None
        rejection = RejectedOperation(op_id, code, message, bool(retriable), self._physical_clock())
        self._outbound.pop(op_id, None)
        self._rejected.pop(op_id, None)
        self._rejected[op_id] = rejection
        return rejection

    async def rejected_operations(self) -> list[RejectedOperation]:
        await self._enter()
        return sorted(self._rejected.values(), key=lambda r: (r.rejected_at, r.op_id))

    async def rebase_pending(self, server_time_ms: int) -> int:
        await self._enter()
        writes = self._replica.plan_rebase(self, server_time_ms)
        self._commit_rebase(writes)
        self._notify(writes.changes())
        return len(writes.replaced)

    # --------------------------------------------------- delivery watermark

    async def delivery_watermark(self, view: str = "") -> int:
        await self._enter()
        return self._watermarks.get(view, 0)

    async def set_delivery_watermark(self, view: str, value: int) -> None:
        check_watermark(value)
        await self._enter()
        self._set_watermark(view, value)

    def _set_watermark(self, view: str, value: int) -> None:
        self._watermarks.pop(view, None)
        self._watermarks[view] = value  # dict order is the LRU order: newest last
        while len(self._watermarks) > MAX_WATERMARK_VIEWS:
            del self._watermarks[next(iter(self._watermarks))]

    # ------------------------------------------------------------- metadata

    async def get_meta(self, key: str) -> str | None:
        check_meta_item(key)
        await self._enter()
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str | None) -> None:
        check_meta_item(key, value)
        await self._enter()
        if value is None:
            self._meta.pop(key, None)
        else:
            self._meta[key] = value

    # ----------------------------------------------------------------- misc

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(tasks_waiting=0, change_counter=self._change_counter)

    async def aclose(self) -> None:
        self._closed = True


@asynccontextmanager
async def open_memory_store(
    *,
    node_id: str | None = None,
    schema_version: int = 1,
    physical_clock: Callable[[], int] | None = None,
) -> AsyncIterator[MemoryStore]:
    """Open an empty in-memory store.

    Args:
        node_id: The node id (default: a new UUIDv7).
        schema_version: The app schema version stamped on new local operations.
        physical_clock: Milliseconds since the epoch for the HLC (tests inject one).
    """
    node = node_id or uuid7()
    clock_source = physical_clock or system_clock_ms
    physical = CorrectedClock(clock_source)
    replica = Replica(
        node,
        HybridLogicalClock(node, physical),
        {},
        physical=physical,
        schema_version=schema_version,
    )
    store = MemoryStore(replica, clock_source)
    await trio.lowlevel.checkpoint()
    try:
        yield store
    finally:
        await store.aclose()
