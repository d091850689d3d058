"""The contract every Store passes: MemoryStore and SQLiteStore run the same tests."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import pytest
from store_helpers import KINDS, START_MS, ManualClock, open_kind

from kora.core.errors import ClosedError, ValidationError
from kora.core.hlc import HLCTimestamp
from kora.core.ids import is_uuid
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.merge import fold
from kora.store import (
    MAX_WATERMARK_VIEWS,
    ChangeSet,
    LocalMutation,
    RecordExistsError,
    RecordNotFoundError,
    Store,
    open_sqlite_store,
)

INC = AtomicOpType.INCREMENT

Opener = Callable[..., AbstractAsyncContextManager[Store]]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(kind: str, tmp_path: Path) -> Opener:
    def open_(**kwargs: Any) -> AbstractAsyncContextManager[Store]:
        return open_kind(kind, tmp_path, **kwargs)

    return open_


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[Store]:
    async with opener() as opened:
        yield opened


def insert(data: dict[str, Any], record_id: str | None = None) -> LocalMutation:
    return LocalMutation.insert("todos", data, record_id=record_id)


# ------------------------------------------------------------------------ local writes


async def test_node_id_is_a_uuid7(store: Store) -> None:
    assert is_uuid(store.node_id)
    assert store.node_id[14] == "7"


async def test_insert_creates_a_content_addressed_queued_operation(store: Store) -> None:
    op = await store.write_local(insert({"title": "milk", "done": False}))
    assert op.type is OpType.INSERT
    assert op.node_id == store.node_id
    assert op.sequence_number == 1
    assert op.causal_deps == ()
    assert op.previous_data is None
    assert op.verify_id()
    record = await store.get("todos", op.record_id)
    assert record is not None
    assert record.fields == {"title": "milk", "done": False}
    assert record.version == op.timestamp.serialize() == record.created_version
    assert record.field_versions == {"title": record.version, "done": record.version}
    assert await store.pending() == [op]
    assert await store.pending_count() == 1
    assert (await store.version_vector()).get(store.node_id) == 1
    assert await store.last_timestamp() == op.timestamp


async def test_update_carries_changed_fields_previous_values_and_atomic_intent(
    store: Store,
) -> None:
    first = await store.write_local(insert({"title": "milk", "count": 2, "done": False}))
    op = await store.write_local(
        LocalMutation.update(
            "todos", first.record_id, {"title": "oat milk"}, atomic={"count": AtomicOp(INC, 3)}
        )
    )
    assert op.type is OpType.UPDATE
    assert op.data == {"title": "oat milk", "count": 5}
    assert op.previous_data == {"title": "milk", "count": 2}
    assert op.atomic_ops == {"count": AtomicOp(INC, 3)}
    assert op.causal_deps == (first.id,)
    assert op.sequence_number == 2
    assert op.timestamp > first.timestamp
    assert op.verify_id()
    record = await store.get("todos", first.record_id)
    assert record is not None
    assert record.fields == {"title": "oat milk", "count": 5, "done": False}
    assert record.field_versions["done"] == first.timestamp.serialize()
    assert record.field_versions["title"] == op.timestamp.serialize()


async def test_causal_deps_follow_the_collection(store: Store) -> None:
    a = await store.write_local(insert({"n": 1}))
    b = await store.write_local(LocalMutation.insert("notes", {"n": 2}))
    c = await store.write_local(insert({"n": 3}))
    assert b.causal_deps == ()
    assert c.causal_deps == (a.id,)


async def test_delete_tombstones_and_guards_updates(store: Store) -> None:
    op = await store.write_local(insert({"title": "x"}))
    deleted = await store.write_local(LocalMutation.delete("todos", op.record_id))
    assert deleted.data is None
    assert deleted.previous_data is None
    assert await store.get("todos", op.record_id) is None
    tomb = await store.get("todos", op.record_id, include_deleted=True)
    assert tomb is not None
    assert tomb.deleted
    assert tomb.fields == {"title": "x"}
    with pytest.raises(RecordNotFoundError):
        await store.write_local(LocalMutation.update("todos", op.record_id, {"title": "y"}))
    with pytest.raises(RecordNotFoundError):
        await store.write_local(LocalMutation.delete("todos", op.record_id))
    # Inserting the same id again re-creates the record with only the new fields.
    again = await store.write_local(insert({"other": 1}, record_id=op.record_id))
    record = await store.get("todos", again.record_id)
    assert record is not None
    assert record.fields == {"other": 1}
    assert await store.pending_count() == 3


async def test_insert_of_a_live_id_and_update_of_a_missing_one_fail(store: Store) -> None:
    op = await store.write_local(insert({"a": 1}, record_id="fixed"))
    assert op.record_id == "fixed"
    with pytest.raises(RecordExistsError):
        await store.write_local(insert({"a": 2}, record_id="fixed"))
    with pytest.raises(RecordNotFoundError):
        await store.write_local(LocalMutation.update("todos", "missing", {"a": 1}))


@pytest.mark.parametrize(
    "mutation",
    [
        LocalMutation.insert("todos", {"x": math.nan}),
        LocalMutation.insert("todos", {"x": math.inf}),
        LocalMutation.insert("todos", {"x": {1, 2}}),  # type: ignore[dict-item]
        LocalMutation.insert("", {"x": 1}),
        LocalMutation(OpType.INSERT, "todos", None, None),
        LocalMutation(OpType.UPDATE, "todos", None, {"x": 1}),
    ],
)
async def test_malformed_mutations_are_refused(store: Store, mutation: LocalMutation) -> None:
    with pytest.raises(ValidationError):
        await store.write_local(mutation)
    assert await store.pending_count() == 0


async def test_update_must_change_something_and_not_set_and_intend_one_field(
    store: Store,
) -> None:
    op = await store.write_local(insert({"n": 1}))
    with pytest.raises(ValidationError):
        await store.write_local(LocalMutation.update("todos", op.record_id, {}))
    with pytest.raises(ValidationError):
        await store.write_local(
            LocalMutation.update("todos", op.record_id, {"n": 2}, atomic={"n": AtomicOp(INC, 1)})
        )
    with pytest.raises(ValidationError):
        await store.write_local(
            LocalMutation.update("todos", op.record_id, atomic={"n": AtomicOp(INC, "x")})
        )


async def test_a_batch_is_all_or_nothing_and_burns_no_sequence_number(store: Store) -> None:
    good = insert({"n": 1})
    with pytest.raises(RecordNotFoundError):
        await store.write_local_many([good, LocalMutation.update("todos", "nope", {"n": 2})])
    assert await store.pending_count() == 0
    assert await store.count("todos") == 0
    assert len(await store.version_vector()) == 0
    op = await store.write_local(good)
    assert op.sequence_number == 1


async def test_a_transaction_chains_its_operations(store: Store) -> None:
    before = await store.write_local(LocalMutation.insert("notes", {"n": 0}))
    ops = await store.write_local_many(
        [
            insert({"n": 1}, record_id="a"),
            LocalMutation.update("todos", "a", atomic={"n": AtomicOp(INC, 2)}),
            LocalMutation.insert("notes", {"n": 3}),
        ],
        transaction_id="tx-1",
    )
    assert [op.sequence_number for op in ops] == [2, 3, 4]
    assert all(op.transaction_id == "tx-1" for op in ops)
    assert ops[0].causal_deps == ()
    assert ops[1].causal_deps == (ops[0].id,)
    assert ops[2].causal_deps == (before.id, ops[1].id)
    record = await store.get("todos", "a")
    assert record is not None
    assert record.fields == {"n": 3}
    assert await store.pending() == [before, *ops]


async def test_mutation_name_and_schema_version_are_carried(opener: Opener) -> None:
    async with opener(schema_version=3) as store:
        op = await store.write_local(attrs.evolve(insert({"n": 1}), mutation_name="createTodo"))
        assert op.schema_version == 3
        assert op.mutation_name == "createTodo"
        (stored,) = await store.operations_for_record("todos", op.record_id)
        assert stored == op


async def test_nested_data_is_copied_at_write(store: Store) -> None:
    tags = ["a"]
    op = await store.write_local(insert({"tags": tags, "meta": {"k": 1.5}}))
    tags.append("b")
    record = await store.get("todos", op.record_id)
    assert record is not None
    assert record.fields == {"tags": ["a"], "meta": {"k": 1.5}}
    assert op.data == {"tags": ["a"], "meta": {"k": 1.5}}
    assert op.verify_id()


# ----------------------------------------------------------------------- remote ops


async def exchange(source: Store, target: Store, order: Callable[[list[Operation]], Any]) -> Any:
    ops = await source.operations_in_range(source.node_id, 1, 10**9)
    return await target.apply_remote(order(ops))


async def test_remote_operations_merge_and_duplicates_are_counted(opener: Opener) -> None:
    async with opener() as a, opener() as b:
        first = await a.write_local(insert({"title": "x", "n": 0}, record_id="r"))
        await a.write_local(LocalMutation.update("todos", "r", {"title": "y"}))
        result = await exchange(a, b, list)
        assert result.applied_count == 2
        assert result.duplicates == 0
        assert not result.rejected
        assert result.changes == ChangeSet.of({"todos": {"r"}})
        again = await b.apply_remote([first, first])
        assert again.applied_count == 0
        assert again.duplicates == 2
        record = await b.get("todos", "r")
        assert record is not None
        assert record.fields == {"title": "y", "n": 0}
        assert (await b.version_vector()).get(a.node_id) == 2
        assert await b.pending_count() == 0  # remote ops are not queued


async def test_out_of_order_delivery_gives_the_same_record(opener: Opener) -> None:
    async with opener() as a, opener() as b, opener() as c:
        await a.write_local(insert({"n": 0, "t": "a"}, record_id="r"))
        for delta in (5, 3, 2):
            await a.write_local(
                LocalMutation.update("todos", "r", atomic={"n": AtomicOp(INC, delta)})
            )
        await a.write_local(LocalMutation.delete("todos", "r"))
        await exchange(a, b, list)
        await exchange(a, c, lambda ops: list(reversed(ops)))
        expected = await a.get("todos", "r", include_deleted=True)
        for replica in (b, c):
            got = await replica.get("todos", "r", include_deleted=True)
            assert got is not None
            assert expected is not None
            assert (got.fields, got.deleted, got.version) == (
                expected.fields,
                expected.deleted,
                expected.version,
            )
        assert expected is not None
        assert expected.fields["n"] == 10
        assert expected.deleted


async def test_runs_of_updates_of_one_record_around_an_older_one_in_one_batch(
    opener: Opener,
) -> None:
    """A batch with runs of newer updates of records (taken in place) broken by an older
    update (a re-fold) and a delete, on a stored record and a new one: what the fold gives."""
    async with opener() as a, opener() as b:
        first = await a.write_local(insert({"n": 0, "t": "a"}, record_id="r"))
        await b.apply_remote([first])
        ops = [
            await a.write_local(
                LocalMutation.update(
                    "todos", "r", {"t": f"v{step}"}, atomic={"n": AtomicOp(INC, step)}
                )
            )
            for step in range(1, 7)
        ]
        ops.append(await a.write_local(insert({"n": 1}, record_id="s")))
        ops += [await a.write_local(LocalMutation.update("todos", "s", {"n": n})) for n in (2, 3)]
        ops.append(await a.write_local(LocalMutation.delete("todos", "s")))
        order = [*ops[:3], ops[4], ops[3], ops[5], ops[7], ops[6], *ops[8:]]
        result = await b.apply_remote(order)
        assert len(result.applied) == len(order)
        for record_id in ("r", "s"):
            expected = await a.get("todos", record_id, include_deleted=True)
            got = await b.get("todos", record_id, include_deleted=True)
            assert expected is not None
            assert got is not None
            assert (got.fields, got.deleted, got.version, dict(got.field_versions)) == (
                expected.fields,
                expected.deleted,
                expected.version,
                dict(expected.field_versions),
            )
        r = await b.get("todos", "r")
        assert r is not None
        assert r.fields == {"n": 21, "t": "v6"}


async def test_concurrent_increments_converge_on_every_replica(opener: Opener) -> None:
    async with opener() as a, opener() as b, opener() as c:
        base = await a.write_local(insert({"count": 0}, record_id="stock"))
        await b.apply_remote([base])
        await c.apply_remote([base])
        for replica, delta in ((a, 5), (b, 3), (c, 2)):
            await replica.write_local(
                LocalMutation.update("todos", "stock", atomic={"count": AtomicOp(INC, delta)})
            )
        replicas = (a, b, c)
        for target in replicas:
            for source in replicas:
                if source is not target:
                    await exchange(source, target, lambda ops: list(reversed(ops)))
        for replica in replicas:
            record = await replica.get("todos", "stock")
            assert record is not None
            assert record.fields == {"count": 10}
            ops = await replica.operations_for_record("todos", "stock")
            assert len(ops) == 4
            state = fold(ops)
            assert state is not None
            assert state.fields == record.fields


async def test_remote_timestamps_advance_the_local_clock(opener: Opener) -> None:
    clock = ManualClock()
    async with opener(physical_clock=clock) as a, opener(physical_clock=clock) as b:
        clock.now = START_MS + 60_000
        remote = await a.write_local(insert({"n": 1}))
        clock.now = START_MS
        await b.apply_remote([remote])
        local = await b.write_local(insert({"n": 2}))
        assert local.timestamp > remote.timestamp


async def test_bad_remote_operations_are_rejected_one_by_one(opener: Opener) -> None:
    clock = ManualClock()
    async with opener(physical_clock=clock) as a, opener(physical_clock=clock) as b:
        good = await a.write_local(insert({"n": 1}, record_id="g"))
        await b.write_local(insert({"warm": True}))  # a clock that has ticked checks drift
        future = attrs.evolve(
            good, id="f" * 64, record_id="f", sequence_number=2,
            timestamp=HLCTimestamp(START_MS + 3_600_000, 0, a.node_id),
        )  # fmt: skip
        invalid = attrs.evolve(
            good, id="i" * 64, record_id="i", sequence_number=3,
            timestamp=HLCTimestamp(START_MS, 100_000, a.node_id),
        )  # fmt: skip
        conflict = attrs.evolve(good, id="c" * 64, record_id="c")  # same node and seq as good
        nan = attrs.evolve(
            good, id="n" * 64, record_id="n", sequence_number=4, data={"x": math.nan}
        )
        result = await b.apply_remote([good, future, invalid, conflict, nan])
        assert [op.id for op in result.applied] == [good.id]
        codes = {r.operation.id: (r.code, r.retriable) for r in result.rejected}
        assert codes == {
            future.id: ("CLOCK_DRIFT", True),
            invalid.id: ("INVALID_TIMESTAMP", False),
            conflict.id: ("SEQUENCE_CONFLICT", False),
            nan.id: ("INVALID_OPERATION", False),
        }
        assert await b.get("todos", "g") is not None
        assert await b.get("todos", "f") is None
        assert (await b.version_vector()).get(a.node_id) == 1


async def test_a_sequence_conflict_with_a_stored_operation_is_rejected(opener: Opener) -> None:
    async with opener() as a, opener() as b:
        good = await a.write_local(insert({"n": 1}, record_id="g"))
        await a.write_local(insert({"n": 2}, record_id="h"))
        await exchange(a, b, list)
        below = attrs.evolve(good, id="c" * 64, record_id="c")  # seq 1, held by good
        result = await b.apply_remote([below])
        assert [(r.operation.id, r.code) for r in result.rejected] == [
            (below.id, "SEQUENCE_CONFLICT")
        ]
        assert await b.get("todos", "c") is None


async def test_a_remote_insert_of_an_existing_record_merges_like_the_fold(opener: Opener) -> None:
    clock = ManualClock()
    async with (
        opener(physical_clock=clock) as a,
        opener(physical_clock=clock) as c,
        opener(physical_clock=clock) as b,
    ):
        first = await a.write_local(insert({"title": "a", "n": 1}, record_id="r"))
        await a.write_local(LocalMutation.update("todos", "r", {"n": 2}))
        clock.now += 5
        second = await c.write_local(insert({"title": "c"}, record_id="r"))
        await exchange(a, b, list)
        result = await b.apply_remote([second])
        assert result.applied_count == 1
        record = await b.get("todos", "r")
        assert record is not None
        ops = await a.operations_in_range(a.node_id, 1, 10)
        expected = fold([*ops, second])
        assert expected is not None
        assert record.fields == expected.fields == {"title": "c"}
        assert record.created_version == first.timestamp.serialize()
        assert record.version == second.timestamp.serialize()


async def test_apply_remote_stores_the_watermark_in_the_same_transaction(opener: Opener) -> None:
    async with opener() as a, opener() as b:
        await a.write_local(insert({"n": 1}, record_id="r"))
        ops = await a.operations_in_range(a.node_id, 1, 10)
        result = await b.apply_remote(ops, watermark=("view", 12))
        assert result.applied_count == 1
        assert await b.delivery_watermark("view") == 12
        assert await b.delivery_watermark("") == 0
        # An empty batch (an invisible tail) still moves the watermark.
        await b.apply_remote([], watermark=("view", 15))
        assert await b.delivery_watermark("view") == 15
        with pytest.raises(ValidationError):
            await b.apply_remote(ops, watermark=("view", -1))
        assert await b.delivery_watermark("view") == 15
        assert (await b.apply_remote(ops)).duplicates == 1


async def test_a_deferred_watermark_is_set_for_every_later_call(opener: Opener) -> None:
    async with opener() as a, opener() as b:
        op = await a.write_local(insert({"n": 1}, record_id="r"))
        await b.set_delivery_watermark_soon("view", 3)
        assert await b.delivery_watermark("view") == 3
        await b.set_delivery_watermark_soon("view", 4)
        await b.set_delivery_watermark_soon("other", 2)
        await b.set_delivery_watermark_soon("view", 5)  # the newest value of a view wins
        # A later apply's own watermark comes after it (the deferred one is written first).
        await b.apply_remote([op], watermark=("view", 9))
        assert await b.delivery_watermark("view") == 9
        assert await b.delivery_watermark("other") == 2
        await b.set_delivery_watermark_soon("view", 11)
        await b.flush_acknowledged()
        assert await b.delivery_watermark("view") == 11
        with pytest.raises(ValidationError):
            await b.set_delivery_watermark_soon("view", -1)
        assert await b.delivery_watermark("view") == 11


async def test_a_deferred_watermark_is_written_at_close(tmp_path: Path) -> None:
    path = str(tmp_path / "deferred.db")
    async with open_sqlite_store(path) as store:
        await store.set_delivery_watermark_soon("view", 8)
    async with open_sqlite_store(path) as store:
        assert await store.delivery_watermark("view") == 8


async def test_an_unsynced_acknowledgment_dequeues_all_the_same(opener: Opener) -> None:
    async with opener() as store:
        one = await store.write_local(insert({"n": 1}))
        two = await store.write_local(insert({"n": 2}))
        assert await store.acknowledge([one.id], power_safe=False) == 1
        assert [op.id for op in await store.pending()] == [two.id]
        await store.write_local(insert({"n": 3}))  # later commits are synced as before
        assert await store.pending_count() == 2


async def test_a_deferred_acknowledgment_is_gone_for_every_later_call(opener: Opener) -> None:
    async with opener() as store:
        one = await store.write_local(insert({"n": 1}))
        two = await store.write_local(insert({"n": 2}))
        three = await store.write_local(insert({"n": 3}))
        await store.acknowledge_soon([one.id])
        assert [op.id for op in await store.pending()] == [two.id, three.id]
        await store.acknowledge_soon([two.id])
        record = await store.write_local(insert({"n": 4}))  # runs it first, in its call
        assert await store.pending_count() == 2
        await store.acknowledge_soon([three.id, record.id])
        await store.flush_acknowledged()
        assert await store.pending_count() == 0


async def test_queue_listeners_hear_of_every_local_write_in_order(opener: Opener) -> None:
    heard: list[list[str]] = []
    async with opener() as a, opener() as b:
        remove = a.add_queue_listener(lambda ops: heard.append([op.id for op in ops]))
        b.add_queue_listener(lambda ops: heard.append(["remote?"]))
        one = await a.write_local(insert({"n": 1}))
        two, three = await a.write_local_many([insert({"n": 2}), insert({"n": 3})])
        await b.apply_remote([one, two, three])  # applying enqueues nothing
        assert heard == [[one.id], [two.id, three.id]]
        assert [op.id for op in await a.pending()] == [one.id, two.id, three.id]
        remove()
        remove()  # idempotent
        await a.write_local(insert({"n": 4}))
        assert len(heard) == 2


async def test_own_operations_restored_from_remote_raise_the_sequence(opener: Opener) -> None:
    async with opener() as a, opener() as b:
        ops = [await a.write_local(insert({"n": i})) for i in range(3)]
        restored = [attrs.evolve(op, node_id=b.node_id) for op in ops]
        restored = [
            attrs.evolve(op, timestamp=attrs.evolve(op.timestamp, node_id=b.node_id))
            for op in restored
        ]
        restored = [op.with_computed_id() for op in restored]
        result = await b.apply_remote(restored)
        assert result.applied_count == 3
        mine = await b.write_local(insert({"n": 9}))
        assert mine.sequence_number == 4


# ---------------------------------------------------------------------------- log


async def test_operations_by_range_and_by_record(opener: Opener) -> None:
    async with opener() as a, opener() as b:
        ops = [await a.write_local(insert({"n": i}, record_id=f"r{i % 2}")) if i < 2 else
               await a.write_local(LocalMutation.update("todos", f"r{i % 2}", {"n": i}))
               for i in range(6)]  # fmt: skip
        assert await a.operations_in_range(a.node_id, 2, 4) == ops[1:4]
        assert await a.operations_in_range(a.node_id, 7, 9) == []
        assert await a.operations_in_range("someone-else", 1, 9) == []
        await b.apply_remote(list(reversed(ops)))
        by_record = await b.operations_for_record("todos", "r0")
        assert by_record == [ops[0], ops[2], ops[4]]


# -------------------------------------------------------------------------- queue


async def test_queue_is_ordered_and_dequeues_only_on_acknowledgment(store: Store) -> None:
    ops = await store.write_local_many([insert({"n": i}) for i in range(5)])
    assert await store.pending(2) == ops[:2]
    assert await store.acknowledge([ops[0].id, ops[2].id, "unknown", ops[0].id]) == 2
    assert await store.pending() == [ops[1], ops[3], ops[4]]
    assert await store.pending_count() == 3
    assert await store.acknowledge([]) == 0
    assert await store.count("todos") == 5  # acknowledging keeps the records


async def test_reject_records_the_reason_and_dequeues(opener: Opener) -> None:
    clock = ManualClock()
    async with opener(physical_clock=clock) as store:
        ops = await store.write_local_many([insert({"n": i}) for i in range(2)])
        rejection = await store.reject(ops[0].id, code="FORBIDDEN", message="no", retriable=False)
        assert rejection is not None
        assert (rejection.op_id, rejection.code, rejection.message) == (
            ops[0].id,
            "FORBIDDEN",
            "no",
        )
        assert rejection.rejected_at == START_MS
        assert not rejection.retriable
        assert await store.pending() == [ops[1]]
        assert await store.rejected_operations() == [rejection]
        assert await store.reject("unknown", code="X", message="", retriable=True) is None
        assert await store.get("todos", ops[0].record_id) is not None


# ---------------------------------------------------------------------- watermarks


async def test_delivery_watermarks_per_view_with_lru_limit(store: Store) -> None:
    assert await store.delivery_watermark() == 0
    await store.set_delivery_watermark("", 7)
    await store.set_delivery_watermark("scoped", 3)
    assert await store.delivery_watermark("") == 7
    assert await store.delivery_watermark("scoped") == 3
    for index in range(MAX_WATERMARK_VIEWS - 2):
        await store.set_delivery_watermark(f"v{index}", index)
    await store.set_delivery_watermark("", 8)  # refreshes "" so "scoped" is now the oldest
    await store.set_delivery_watermark("one-too-many", 1)
    assert await store.delivery_watermark("scoped") == 0
    assert await store.delivery_watermark("") == 8
    assert await store.delivery_watermark("v0") == 0
    await store.set_delivery_watermark("", 0)
    assert await store.delivery_watermark("") == 0
    with pytest.raises(ValidationError):
        await store.set_delivery_watermark("", -1)


# ------------------------------------------------------------------------ metadata


async def test_meta_values_are_kept_apart_from_the_store_own(store: Store) -> None:
    assert await store.get_meta("sync.scope") is None
    await store.set_meta("sync.scope", '{"todos":{}}')
    await store.set_meta("hlc", "not a timestamp")  # the store's own keys are elsewhere
    await store.set_meta("node_id", "someone")
    assert await store.get_meta("sync.scope") == '{"todos":{}}'
    assert await store.get_meta("hlc") == "not a timestamp"
    op = await store.write_local(insert({"n": 1}))
    assert op.node_id == store.node_id
    assert await store.last_timestamp() == op.timestamp
    await store.set_meta("sync.scope", "")
    assert await store.get_meta("sync.scope") == ""
    await store.set_meta("sync.scope", None)
    assert await store.get_meta("sync.scope") is None
    await store.set_meta("never-set", None)  # removing nothing is fine


@pytest.mark.parametrize(
    ("key", "value"), [("", "v"), (None, "v"), (1, "v"), ("k", 1), ("k", b"v")]
)
async def test_bad_meta_items_are_refused(store: Store, key: Any, value: Any) -> None:
    with pytest.raises(ValidationError):
        await store.set_meta(key, value)
    if not isinstance(key, str) or not key:
        with pytest.raises(ValidationError):
            await store.get_meta(key)


# ------------------------------------------------------------------------- queries

ROWS: list[tuple[str, dict[str, Any]]] = [
    ("a", {"title": "milk", "prio": 2, "done": False, "tags": ["x"]}),
    ("b", {"title": "eggs", "prio": 1, "done": True}),
    ("c", {"title": "bread", "prio": 2.5, "done": False}),
    ("d", {"title": "Apples", "prio": None, "done": False}),
    ("e", {"title": "zucchini", "done": True}),
    ("f", {"title": 10, "prio": 2, "done": False}),
]


@pytest.fixture
async def filled(store: Store) -> Store:
    await store.write_local_many([insert(data, record_id=rid) for rid, data in ROWS])
    await store.write_local(
        LocalMutation.insert("todos", {"title": "gone", "prio": 9}, record_id="g")
    )
    await store.write_local(LocalMutation.delete("todos", "g"))
    await store.write_local(LocalMutation.insert("other", {"title": "milk"}, record_id="o"))
    return store


async def ids(store: Store, *args: Any, **kwargs: Any) -> list[str]:
    return [record.id for record in await store.query("todos", *args, **kwargs)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([], ["a", "b", "c", "d", "e", "f"]),
        ([("done", "==", False)], ["a", "c", "d", "f"]),
        ([("done", "==", True), ("title", "==", "eggs")], ["b"]),
        ([("prio", "==", 2)], ["a", "f"]),
        ([("prio", "==", None)], ["d", "e"]),
        ([("prio", "!=", 2)], ["b", "c", "d", "e"]),
        ([("prio", ">", 1)], ["a", "c", "f"]),
        ([("prio", "<=", 2)], ["a", "b", "f"]),
        ([("title", "<", "m")], ["b", "c", "d", "f"]),  # numbers sort before text
        ([("title", ">=", "milk")], ["a", "e"]),
        ([("prio", "in", [1, 2.5, None])], ["b", "c"]),
        ([("title", "in", [])], []),
        ([("id", "in", ["a", "e", "g"])], ["a", "e"]),
        ([("tags", "==", ["x"])], ["a"]),
        ([("missing", "==", None)], ["a", "b", "c", "d", "e", "f"]),
    ],
)
async def test_where(filled: Store, where: list[Any], expected: list[str]) -> None:
    assert sorted(await ids(filled, where)) == expected
    assert await filled.count("todos", where) == len(expected)


async def test_order_limit_offset_and_deleted(filled: Store) -> None:
    assert await ids(filled, [], [("prio", False)]) == ["d", "e", "b", "a", "f", "c"]
    assert await ids(filled, [], [("prio", True)]) == ["c", "a", "f", "b", "d", "e"]
    assert await ids(filled, [], [("done", False), ("title", True)]) == [
        "a",
        "c",
        "d",
        "f",
        "e",
        "b",
    ]
    assert await ids(filled, [("done", "==", False)], [("prio", True)], limit=2) == ["c", "a"]
    assert await ids(filled, [], [("id", True)], limit=2, offset=1) == ["e", "d"]
    assert await ids(filled, [], [("id", False)], offset=5) == ["f"]
    assert await ids(filled, [], limit=0) == []
    assert await ids(filled, [("prio", "==", 9)]) == []
    assert await ids(filled, [("prio", "==", 9)], include_deleted=True) == ["g"]
    assert await filled.count("todos", include_deleted=True) == 7
    assert await filled.count("nothing") == 0
    records = await filled.query("todos", [("id", "==", "a")])
    assert records[0].fields["tags"] == ["x"]
    assert records[0].collection == "todos"


@pytest.mark.parametrize(
    ("where", "order_by", "limit"),
    [
        ([("x", "~", 1)], [], None),
        ([("x", "in", 1)], [], None),
        ([("", "==", 1)], [], None),
        ([('we"ird', "==", 1)], [], None),
        ([("x", "==", math.nan)], [], None),
        ([], [], -1),
    ],
)
async def test_bad_queries_are_refused(
    store: Store, where: list[Any], order_by: list[Any], limit: int | None
) -> None:
    with pytest.raises(ValidationError):
        await store.query("todos", where, order_by, limit=limit)


async def test_field_names_with_quotes_and_dots_work(store: Store) -> None:
    await store.write_local(insert({"it's": 1, "a.b": 2}, record_id="q"))
    assert await ids(store, [("it's", "==", 1), ("a.b", "==", 2)]) == ["q"]


# ----------------------------------------------------------------- change notification


async def test_listeners_and_counters_see_committed_changes(opener: Opener) -> None:
    async with opener() as a, opener() as b:
        seen: list[ChangeSet] = []
        remove = b.add_change_listener(seen.append)
        b.add_change_listener(lambda changes: 1 / 0)  # a broken listener changes nothing
        assert b.change_counter() == 0
        op = await b.write_local(insert({"n": 1}, record_id="r"))
        await b.write_local(LocalMutation.insert("notes", {"n": 1}, record_id="s"))
        remote = await a.write_local(insert({"n": 2}, record_id="t"))
        await b.apply_remote([remote])
        await b.apply_remote([remote])  # a duplicate changes nothing
        assert seen == [
            ChangeSet.of({"todos": {"r"}}),
            ChangeSet.of({"notes": {"s"}}),
            ChangeSet.of({"todos": {"t"}}),
        ]
        assert b.change_counter() == 3
        assert b.change_counter("todos") == 2
        assert b.change_counter("notes") == 1
        remove()
        await b.write_local(LocalMutation.delete("todos", op.record_id))
        assert len(seen) == 3
        assert b.statistics().change_counter == 4


async def test_closed_store_refuses_calls(opener: Opener) -> None:
    async with opener() as store:
        pass
    with pytest.raises(ClosedError):
        await store.get("todos", "x")
    await store.aclose()  # idempotent


# -------------------------------------------------------------------- clock rebase

TEN_MINUTES = 600_000
LEAD_LIMIT = 60_000  # the server refuses wall times further ahead of its own (spec 8.4)


async def test_rebase_restamps_the_queued_operations_of_a_fast_clock(opener: Opener) -> None:
    clock = ManualClock()
    async with opener(physical_clock=clock) as store, opener(physical_clock=clock) as peer:
        # Settled history at the right time: acknowledged, and a peer's operation.
        settled = await store.write_local(insert({"title": "a", "n": 0}, record_id="a"))
        await store.acknowledge([settled.id])
        clock.now = START_MS + 1_000
        remote = await peer.write_local(insert({"title": "b"}, record_id="b"))
        await store.apply_remote([remote])
        # Then the clock jumps ten minutes ahead while offline.
        clock.now = START_MS + TEN_MINUTES
        fast = [
            await store.write_local(
                LocalMutation.update("todos", "a", {"title": "A"}, atomic={"n": AtomicOp(INC, 2)})
            ),
            await store.write_local(LocalMutation.update("todos", "b", {"title": "B"})),
            *await store.write_local_many(
                [insert({"title": "c"}, record_id="c"), LocalMutation.delete("todos", "b")],
                transaction_id="tx-1",
            ),
            await store.write_local(LocalMutation.insert("notes", {"text": "n"}, record_id="n")),
        ]
        vector = await store.version_vector()
        seen: list[ChangeSet] = []
        store.add_change_listener(seen.append)
        server_time = START_MS + 5_000

        assert await store.rebase_pending(server_time) == len(fast)

        queued = await store.pending()
        assert [op.sequence_number for op in queued] == [op.sequence_number for op in fast]
        assert not {op.id for op in queued} & {op.id for op in fast}
        stamps = [op.timestamp for op in queued]
        assert stamps == sorted(stamps)
        assert all(op.verify_id() for op in queued)
        assert all(op.timestamp.wall_time <= server_time + LEAD_LIMIT for op in queued)
        assert stamps[0] > remote.timestamp  # still after what it was written after
        for old, new in zip(fast, queued, strict=True):
            assert (new.type, new.collection, new.record_id, new.data, new.previous_data) == (
                old.type,
                old.collection,
                old.record_id,
                old.data,
                old.previous_data,
            )
            assert (new.atomic_ops, new.transaction_id) == (old.atomic_ops, old.transaction_id)
        renamed = {old.id: new.id for old, new in zip(fast, queued, strict=True)}
        for old, new in zip(fast, queued, strict=True):
            assert new.causal_deps == tuple(renamed.get(dep, dep) for dep in old.causal_deps)
        assert queued[0].causal_deps == (settled.id,)
        assert queued[3].causal_deps == (queued[2].id,)  # the transaction's chain, renamed
        # The log holds the new rows in place of the old ones, under the same sequences.
        assert await store.version_vector() == vector
        assert await store.operations_in_range(store.node_id, 1, 99) == [settled, *queued]
        for op in fast:
            assert await store.acknowledge([op.id]) == 0  # the old ids are gone
        # Records carry the new versions and the same values.
        a = await store.get("todos", "a")
        assert a is not None
        assert a.fields == {"title": "A", "n": 2}
        assert a.version == queued[0].timestamp.serialize()
        assert a.field_versions["title"] == a.version
        for key in (("todos", "a"), ("todos", "b"), ("todos", "c"), ("notes", "n")):
            record = await store.get(*key, include_deleted=True)
            state = fold(await store.operations_for_record(*key))
            assert record is not None
            assert state is not None
            assert (record.fields, record.deleted, record.version) == (
                state.fields,
                state.deleted,
                state.version,
            )
            assert dict(record.field_versions) == dict(state.field_versions)
        assert seen == [ChangeSet.of({"todos": {"a", "b", "c"}, "notes": {"n"}})]
        # The clock restarts from the rebased operations, corrected to the server's time.
        assert await store.last_timestamp() == stamps[-1]
        later = await store.write_local(insert({"title": "d"}))
        assert stamps[-1] < later.timestamp
        assert later.timestamp.wall_time <= server_time + LEAD_LIMIT
        assert later.causal_deps == (queued[3].id,)  # the renamed last op of the collection
        # Done once: nothing is ahead any more.
        assert await store.rebase_pending(server_time) == 0
        assert await store.pending() == [*queued, later]


async def test_rebase_keeps_queued_operations_that_are_not_ahead(opener: Opener) -> None:
    clock = ManualClock()
    async with opener(physical_clock=clock) as store:
        early = await store.write_local(insert({"n": 1}, record_id="r"))
        clock.now = START_MS + 30_000  # ahead, but within what the server accepts
        near = await store.write_local(LocalMutation.update("todos", "r", {"n": 2}))
        assert await store.rebase_pending(START_MS) == 0
        assert await store.pending() == [early, near]
        clock.now = START_MS + TEN_MINUTES
        far = await store.write_local(LocalMutation.update("todos", "r", {"n": 3}))
        rejected = await store.write_local(insert({"n": 4}, record_id="x"))
        await store.reject(rejected.id, code="NO", message="no", retriable=False)
        assert await store.rebase_pending(START_MS) == 1
        queued = await store.pending()
        assert queued[:2] == [early, near]  # possibly on the server already: not renamed
        (moved,) = queued[2:]
        assert moved.sequence_number == far.sequence_number
        assert moved.causal_deps == (near.id,)
        assert near.timestamp < moved.timestamp
        assert moved.timestamp.wall_time <= START_MS + LEAD_LIMIT
        # A rejected operation is out of the queue: it is left as it is.
        assert [r.op_id for r in await store.rejected_operations()] == [rejected.id]
        assert await store.operations_in_range(store.node_id, 4, 4) == [rejected]
        record = await store.get("todos", "r")
        assert record is not None
        assert record.fields == {"n": 3}
        assert record.version == moved.timestamp.serialize()


async def test_rebase_with_nothing_queued_still_brings_the_clock_back(opener: Opener) -> None:
    clock = ManualClock(START_MS + TEN_MINUTES)
    async with opener(physical_clock=clock) as store:
        assert await store.rebase_pending(START_MS) == 0  # an empty store
        fresh = await store.write_local(insert({"n": 1}))
        assert fresh.timestamp.wall_time == START_MS  # the correction applies at once
        clock.now += TEN_MINUTES  # the machine's clock jumps again
        ahead = await store.write_local(insert({"n": 2}))
        await store.acknowledge([fresh.id, ahead.id])
        assert await store.rebase_pending(START_MS + 1_000) == 0
        assert await store.last_timestamp() == fresh.timestamp  # the newest within the limit
        clock.now = START_MS + 2 * TEN_MINUTES + 2_000
        later = await store.write_local(insert({"n": 3}))
        assert later.timestamp.wall_time == START_MS + 3_000
        # A correct clock clears the correction.
        clock.now = START_MS + 10_000
        assert await store.rebase_pending(START_MS + 10_000) == 0
        assert (await store.write_local(insert({"n": 4}))).timestamp.wall_time == START_MS + 10_000


@pytest.mark.parametrize("bad", [-1, 1.5, "1700000000000", None, 10**15])
async def test_rebase_refuses_a_bad_server_time(store: Store, bad: Any) -> None:
    op = await store.write_local(insert({"n": 1}))
    with pytest.raises(ValidationError):
        await store.rebase_pending(bad)
    assert await store.pending() == [op]


async def test_rebase_of_a_long_random_history(opener: Opener) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    clock = ManualClock()
    async with opener(physical_clock=clock) as store, opener(physical_clock=clock) as peer:
        for step in range(60):
            clock.now += rng.choice([0, 1, 500, TEN_MINUTES // 20])
            record_id = f"r{rng.randrange(6)}"
            source = peer if rng.random() < 0.3 else store
            live = await source.get("todos", record_id)
            if live is None:
                mutation = insert({"n": step}, record_id=record_id)
            elif rng.random() < 0.2:
                mutation = LocalMutation.delete("todos", record_id)
            else:
                mutation = LocalMutation.update(
                    "todos", record_id, {"s": step}, atomic={"n": AtomicOp(INC, 1)}
                )
            op = await source.write_local(mutation)
            if source is peer:
                await store.apply_remote([op])
            elif rng.random() < 0.3:
                await store.acknowledge([op.id])
            else:
                await peer.apply_remote([op])
        server_time = START_MS + rng.randrange(TEN_MINUTES)
        before = await store.pending()
        count = await store.rebase_pending(server_time)
        after = await store.pending()
        assert len(after) == len(before)
        assert count == sum(a.id != b.id for a, b in zip(before, after, strict=True))
        assert all(op.timestamp.wall_time <= server_time + LEAD_LIMIT for op in after)
        assert [op.timestamp for op in after] == sorted(op.timestamp for op in after)
        assert all(op.verify_id() for op in after)
        for collection, record_id in {(op.collection, op.record_id) for op in after}:
            record = await store.get(collection, record_id, include_deleted=True)
            state = fold(await store.operations_for_record(collection, record_id))
            assert record is not None
            assert state is not None
            assert (record.fields, record.version, dict(record.field_versions)) == (
                state.fields,
                state.version,
                dict(state.field_versions),
            )


async def test_a_batch_out_of_order_with_repeats_and_a_rival_is_sorted_out(opener: Opener) -> None:
    """Within one batch: a later sequence number first, an earlier one after it, a rival
    for a number the batch already holds, a repeated id; the clock ends past them all."""
    async with opener() as a, opener() as b:
        one, two, three = await a.write_local_many(
            [insert({"n": n}, record_id=f"r{n}") for n in range(3)]
        )
        rival = attrs.evolve(two, id="e" * 64, record_id="rival")  # same node, seq 2
        result = await b.apply_remote([three, one, two, rival, one, three])
        assert [op.id for op in result.applied] == [three.id, one.id, two.id]
        assert result.duplicates == 2
        assert [(r.operation.id, r.code) for r in result.rejected] == [
            (rival.id, "SEQUENCE_CONFLICT")
        ]
        assert (await b.version_vector()).get(a.node_id) == 3
        assert await b.count("todos") == 3
        assert await b.get("todos", "rival") is None
        last = await b.last_timestamp()
        assert last is not None
        assert last > three.timestamp
        mine = await b.write_local(insert({"n": 9}))
        assert mine.timestamp > three.timestamp


async def test_named_records_in_one_batch_see_the_store_and_each_other(opener: Opener) -> None:
    """A batch reads the records it names in one go; its own changes come first."""
    async with opener() as store:
        await store.write_local_many([insert({"n": 1}, record_id="old"), insert({"n": 2}, "gone")])
        await store.write_local(LocalMutation.delete("todos", "gone"))
        with pytest.raises(RecordExistsError):
            await store.write_local_many([insert({"n": 3}, record_id="new"), insert({}, "old")])
        assert await store.get("todos", "new") is None
        ops = await store.write_local_many(
            [
                insert({"n": 3}, record_id="new"),
                LocalMutation.update("todos", "new", {"n": 4}),
                insert({"n": 5}, record_id="gone"),  # re-inserts a deleted record
                LocalMutation.update("todos", "old", {"n": 6}),
                LocalMutation.delete("todos", "old"),
            ],
            transaction_id="t",
        )
        assert [op.type for op in ops] == [OpType.INSERT, OpType.UPDATE, OpType.INSERT,
                                           OpType.UPDATE, OpType.DELETE]  # fmt: skip
        new = await store.get("todos", "new")
        gone = await store.get("todos", "gone")
        assert new is not None
        assert new.fields == {"n": 4}
        assert gone is not None
        assert gone.fields == {"n": 5}
        assert await store.get("todos", "old") is None
        with pytest.raises(RecordNotFoundError):
            await store.write_local(LocalMutation.update("todos", "old", {"n": 7}))
