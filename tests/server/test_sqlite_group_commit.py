"""Group commit of the SQLite server store: batches that wait for a running commit share the
next transaction, with the outcomes separate transactions in that order would give."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation
from kora.core.operations import create_operation
from kora.server.stores import sqlite as sqlite_store
from kora.server.stores.base import AppendResult, AppendStatus, ServerStoreError
from kora.server.stores.sqlite import SqliteServerStore

WALL = 1_700_000_000_000


def op(node: str, seq: int, record: str | None = None) -> Operation:
    return create_operation(
        type="insert",
        node_id=node,
        collection="todos",
        record_id=record or f"{node}-{seq}",
        data={"n": seq},
        previous_data=None,
        timestamp=HLCTimestamp(WALL + seq, 0, node),
        sequence_number=seq,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteServerStore]:
    async with SqliteServerStore(tmp_path / "server.db") as opened:
        yield opened


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of batches of each write transaction, in order."""
    sizes: list[int] = []
    original = sqlite_store._append_group

    def counting(conn: sqlite3.Connection, group: Sequence[Any]) -> Any:
        sizes.append(len(group))
        return original(conn, group)

    monkeypatch.setattr(sqlite_store, "_append_group", counting)
    return sizes


async def append_all(
    store: SqliteServerStore, batches: list[list[Operation]]
) -> list[AppendResult]:
    """Start every append at once, in list order; their results in the same order."""
    results: list[AppendResult | None] = [None] * len(batches)

    async def one(index: int) -> None:
        results[index] = await store.append_batch(batches[index])

    async with trio.open_nursery() as nursery:
        for index in range(len(batches)):
            nursery.start_soon(one, index)
            await trio.lowlevel.checkpoint()  # queue in list order
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


async def test_waiting_batches_share_a_transaction(
    store: SqliteServerStore, transactions: list[int]
) -> None:
    batches = [[op(f"n{i}", 1), op(f"n{i}", 2)] for i in range(12)]
    results = await append_all(store, batches)
    assert sum(transactions) == 12
    assert len(transactions) < 12  # some shared a commit
    sequences = [o.delivery_sequence for r in results for o in r.outcomes]
    assert sorted(sequences) == list(range(1, 25))  # type: ignore[type-var]
    for batch, result in zip(batches, results, strict=True):
        assert [o.operation for o in result.outcomes] == batch
        assert result.max_delivery_sequence == result.outcomes[-1].delivery_sequence
    assert await store.max_delivery_sequence() == 24
    assert await store.operation_count() == 24


async def test_a_group_decides_as_separate_transactions_in_order_would(
    store: SqliteServerStore, transactions: list[int]
) -> None:
    first = op("a", 1)
    batches = [[first, op("a", 2)], [op("b", 1), first], [first], [op("c", 1, record="a-1")]]
    results = await append_all(store, batches)
    assert max(transactions) > 1
    statuses = [[o.status for o in r.outcomes] for r in results]
    assert statuses == [
        [AppendStatus.APPLIED, AppendStatus.APPLIED],
        [AppendStatus.APPLIED, AppendStatus.DUPLICATE],  # stored by the batch before it
        [AppendStatus.DUPLICATE],
        [AppendStatus.APPLIED],
    ]
    record = await store.find_record("todos", "a-1")
    assert record is not None
    assert record.last_op_id == batches[3][0].id  # folded after the earlier insert


async def test_a_failing_batch_fails_alone(
    store: SqliteServerStore, transactions: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = op("bad", 1)
    original = sqlite_store.plan_append

    def failing(reader: Any, ops: Sequence[Operation], admit: Any) -> Any:
        if bad in ops:
            raise sqlite3.OperationalError("disk I/O error")
        return original(reader, ops, admit)

    monkeypatch.setattr(sqlite_store, "plan_append", failing)
    outcomes: dict[str, object] = {}

    async def one(name: str, batch: list[Operation]) -> None:
        try:
            outcomes[name] = await store.append_batch(batch)
        except ServerStoreError as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        for name, batch in [("x", [op("x", 1)]), ("bad", [bad]), ("y", [op("y", 1)])]:
            nursery.start_soon(one, name, batch)
            await trio.lowlevel.checkpoint()
    assert isinstance(outcomes["bad"], ServerStoreError)
    assert isinstance(outcomes["x"], AppendResult)
    assert isinstance(outcomes["y"], AppendResult)
    assert await store.operation_count() == 2


async def test_a_cancelled_waiting_batch_is_not_written(
    store: SqliteServerStore, transactions: list[int]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.append_batch, [op("a", 1)])
        await trio.lowlevel.checkpoint()
        with trio.CancelScope() as scope:
            scope.cancel()  # it queues behind the running commit, then gives up
            await store.append_batch([op("gone", 1)])
        nursery.start_soon(store.append_batch, [op("b", 1)])
    ids = {d.operation.node_id for d in await store.operations_after_delivery(0, 10)}
    assert ids == {"a", "b"}
    assert sum(transactions) == 2
