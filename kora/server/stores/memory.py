"""``MemoryServerStore``: the server store for tests and demos; nothing survives the process."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from kora.core.errors import ClosedError
from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.merge import RecordState
from kora.server.stores._append import AppendPlan, RecordKey, plan_append
from kora.server.stores._signal import CommitSignal
from kora.server.stores.base import (
    Admit,
    AppendResult,
    DeliveredOperation,
    ServerStore,
)

__all__ = ["MemoryServerStore", "open_memory_server_store"]


class MemoryServerStore(ServerStore):
    """Keeps everything in dicts and lists of this process.

    An append runs without an ``await`` between its reads and writes, so it is atomic on the
    event loop without a lock.  It is usable right after construction; ``open`` does nothing.

    Args:
        node_id: The server's node id; a fresh UUIDv7 if omitted.
    """

    def __init__(self, *, node_id: str | None = None) -> None:
        self._node_id = node_id or uuid7()
        self._log: list[DeliveredOperation] = []  # index i holds delivery sequence i + 1
        self._by_id: set[str] = set()
        self._by_node: dict[str, list[tuple[int, int, Operation]]] = {}
        self._by_record: dict[RecordKey, list[Operation]] = {}
        self._records: dict[RecordKey, RecordState] = {}
        self._version_vector: dict[str, int] = {}
        self._signal = CommitSignal()
        self._closed = False

    @property
    def node_id(self) -> str:
        return self._node_id

    async def open(self) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._closed = True
        self._signal.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the server store is closed")

    async def append_batch(
        self, ops: Sequence[Operation], *, admit: Admit | None = None
    ) -> AppendResult:
        self._check_open()
        await trio.lowlevel.checkpoint()
        self._check_open()
        plan = plan_append(_MemoryReader(self), ops, admit)
        self._write(plan)
        self._signal.advance(plan.max_delivery_sequence)
        return AppendResult(plan.outcomes, plan.max_delivery_sequence)

    def _write(self, plan: AppendPlan) -> None:
        for delivered in plan.applied:
            op = delivered.operation
            self._log.append(delivered)
            self._by_id.add(op.id)
            bisect.insort(
                self._by_node.setdefault(op.node_id, []),
                (op.sequence_number, delivered.delivery_sequence, op),
                key=lambda entry: (entry[0], entry[1]),
            )
            self._by_record.setdefault((op.collection, op.record_id), []).append(op)
        for node, sequence in plan.version_vector.items():
            self._version_vector[node] = max(self._version_vector.get(node, 0), sequence)
        self._records.update(plan.records)

    async def max_delivery_sequence(self) -> int:
        self._check_open()
        await trio.lowlevel.checkpoint()
        return len(self._log)

    async def operations_after_delivery(self, after: int, limit: int) -> list[DeliveredOperation]:
        self._check_open()
        await trio.lowlevel.checkpoint()
        start = max(after, 0)
        return self._log[start : start + max(limit, 0)]

    async def version_vector(self) -> VersionVector:
        self._check_open()
        await trio.lowlevel.checkpoint()
        return VersionVector(self._version_vector)

    async def operations_in_range(
        self, node_id: str, from_seq: int, to_seq: int
    ) -> list[Operation]:
        self._check_open()
        await trio.lowlevel.checkpoint()
        entries = self._by_node.get(node_id, [])
        return [op for sequence, _, op in entries if from_seq <= sequence <= to_seq]

    async def find_record(
        self, collection: str, record_id: str, *, include_deleted: bool = True
    ) -> RecordState | None:
        self._check_open()
        await trio.lowlevel.checkpoint()
        state = self._records.get((collection, record_id))
        if state is None or (state.deleted and not include_deleted):
            return None
        return state

    async def operation_count(self) -> int:
        self._check_open()
        await trio.lowlevel.checkpoint()
        return len(self._log)

    async def wait_for_new(self, after: int) -> int:
        self._check_open()
        return await self._signal.wait_above(after)


class _MemoryReader:
    def __init__(self, store: MemoryServerStore) -> None:
        self._store = store

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return {op_id for op_id in ids if op_id in self._store._by_id}

    def current_max_delivery_sequence(self) -> int:
        return len(self._store._log)

    def load_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, RecordState]:
        records = self._store._records
        return {key: records[key] for key in keys if key in records}

    def load_record_operations(self, key: RecordKey) -> list[Operation]:
        return list(self._store._by_record.get(key, []))


@asynccontextmanager
async def open_memory_server_store(
    *, node_id: str | None = None
) -> AsyncIterator[MemoryServerStore]:
    """``async with open_memory_server_store() as store``: a fresh in-memory store."""
    async with MemoryServerStore(node_id=node_id) as store:
        yield store
