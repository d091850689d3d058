"""One contract for every ServerStore: memory, SQLite and PostgreSQL run the same tests.

The ``postgres`` cases need the database of tests/server/conftest.py; they are skipped when
it is unreachable (or fail with KORA_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import psycopg
import pytest
import trio
import trio.testing
from psycopg import sql

from kora.core.errors import ClosedError
from kora.core.hlc import HLCTimestamp
from kora.core.json_types import JsonValue
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.core.version_vector import VersionVector
from kora.merge import RecordState, fold
from kora.server.stores import (
    AppendStatus,
    DeliveredOperation,
    MemoryServerStore,
    PostgresServerStore,
    ServerStore,
    ServerStoreError,
    SqliteServerStore,
    create_server_store,
    open_memory_server_store,
    open_postgres_server_store,
    open_server_store,
    open_sqlite_server_store,
)
from kora.server.stores._append import RecordKey, plan_append
from kora.server.stores.postgres import application_name

if TYPE_CHECKING:  # the fixture's type; conftest modules are not importable by name
    from conftest import PostgresTarget

OpenStore = Callable[[], AbstractAsyncContextManager[ServerStore]]

BASE_WALL = 1_700_000_000_000


def make_op(
    *,
    node: str = "node-a",
    seq: int = 1,
    kind: OpType = OpType.INSERT,
    collection: str = "todos",
    record: str = "r1",
    data: dict[str, JsonValue] | None = None,
    previous: dict[str, JsonValue] | None = None,
    wall: int | None = None,
    atomic: dict[str, AtomicOp] | None = None,
    transaction_id: str | None = None,
    mutation_name: str | None = None,
    deps: tuple[str, ...] = (),
) -> Operation:
    if data is None and kind is not OpType.DELETE:
        data = {"title": f"{node}-{seq}"}
    return Operation(
        id="",
        node_id=node,
        type=kind,
        collection=collection,
        record_id=record,
        data=data,
        previous_data=previous,
        timestamp=HLCTimestamp(BASE_WALL + seq if wall is None else wall, 0, node),
        sequence_number=seq,
        causal_deps=deps,
        atomic_ops=atomic,
        transaction_id=transaction_id,
        mutation_name=mutation_name,
    ).with_computed_id()


def inserts(count: int, *, node: str = "node-a", first_seq: int = 1) -> list[Operation]:
    return [
        make_op(node=node, seq=seq, record=f"{node}-r{seq}")
        for seq in range(first_seq, first_seq + count)
    ]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> OpenStore:
    """Opens a store of the kind under test; every call opens the *same* database again."""
    if store_kind == "memory":
        return lambda: open_memory_server_store(node_id="server-node")
    if store_kind == "sqlite":
        path = tmp_path / "server.db"
        return lambda: open_sqlite_server_store(path, node_id="server-node")
    target: PostgresTarget = request.getfixturevalue("postgres_target")
    return lambda: open_postgres_server_store(
        target.dsn, schema=target.schema, node_id="server-node"
    )


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[ServerStore]:
    async with open_store() as opened:
        yield opened


@pytest.fixture
def durable_open_store(store_kind: str, open_store: OpenStore) -> OpenStore:
    if store_kind == "memory":
        pytest.skip("the memory store keeps nothing across instances")
    return open_store


async def read_all(store: ServerStore, *, page: int = 1000) -> list[DeliveredOperation]:
    out: list[DeliveredOperation] = []
    while True:
        chunk = await store.operations_after_delivery(out[-1].delivery_sequence if out else 0, page)
        out.extend(chunk)
        if len(chunk) < page:
            return out


# ------------------------------------------------------------------ basics


async def test_an_empty_store(store: ServerStore) -> None:
    assert store.node_id == "server-node"
    assert await store.max_delivery_sequence() == 0
    assert await store.operation_count() == 0
    assert await store.version_vector() == VersionVector()
    assert await store.operations_after_delivery(0, 10) == []
    assert await store.operations_in_range("node-a", 1, 10) == []
    assert await store.find_record("todos", "r1") is None


async def test_append_assigns_contiguous_delivery_sequences_in_batch_order(
    store: ServerStore,
) -> None:
    ops = inserts(3)
    result = await store.append_batch(ops)
    assert [o.status for o in result.outcomes] == [AppendStatus.APPLIED] * 3
    assert [o.delivery_sequence for o in result.outcomes] == [1, 2, 3]
    assert [o.operation for o in result.outcomes] == ops
    assert result.max_delivery_sequence == 3
    assert result.applied == tuple(DeliveredOperation(op, i + 1) for i, op in enumerate(ops))

    second = await store.append_batch(inserts(2, node="node-b"))
    assert [o.delivery_sequence for o in second.outcomes] == [4, 5]
    assert await store.max_delivery_sequence() == 5
    assert await store.operation_count() == 5


async def test_duplicates_never_burn_a_delivery_sequence(store: ServerStore) -> None:
    first, second, third = inserts(3)
    await store.append_batch([first])
    result = await store.append_batch([first, second, second, third, first])
    assert [(o.status, o.delivery_sequence) for o in result.outcomes] == [
        (AppendStatus.DUPLICATE, None),
        (AppendStatus.APPLIED, 2),
        (AppendStatus.DUPLICATE, None),
        (AppendStatus.APPLIED, 3),
        (AppendStatus.DUPLICATE, None),
    ]
    only_duplicates = await store.append_batch([third, first])
    assert only_duplicates.applied == ()
    assert only_duplicates.max_delivery_sequence == 3
    later = await store.append_batch(inserts(1, node="node-c"))
    assert later.outcomes[0].delivery_sequence == 4
    assert [d.delivery_sequence for d in await read_all(store)] == [1, 2, 3, 4]
    assert await store.operation_count() == 4


async def test_an_empty_batch_changes_nothing(store: ServerStore) -> None:
    result = await store.append_batch([])
    assert result.outcomes == ()
    assert result.max_delivery_sequence == 0


async def test_operations_after_delivery_pages_in_ascending_order(store: ServerStore) -> None:
    ops = inserts(25)
    for start in range(0, 25, 7):  # several commits
        await store.append_batch(ops[start : start + 7])
    pages = []
    after = 0
    while True:
        page = await store.operations_after_delivery(after, 10)
        pages.append([d.delivery_sequence for d in page])
        if len(page) < 10:
            break
        after = page[-1].delivery_sequence
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [d.operation for d in await read_all(store, page=4)] == ops
    assert [d.delivery_sequence for d in await store.operations_after_delivery(23, 100)] == [24, 25]
    assert await store.operations_after_delivery(25, 10) == []
    assert await store.operations_after_delivery(0, 0) == []


async def test_operations_round_trip_every_field(store: ServerStore) -> None:
    update = make_op(
        seq=2,
        kind=OpType.UPDATE,
        data={"count": 6, "ratio": 1.0, "tags": ["a", {"b": None}], "text": "é\u2028 \ud800"},
        previous={"count": 5, "ratio": 0.5},
        atomic={"count": AtomicOp(AtomicOpType.INCREMENT, 1)},
        transaction_id="tx-1",
        mutation_name="bump",
        deps=("dep-1", "dep-2"),
    )
    delete = make_op(seq=3, kind=OpType.DELETE)
    ops = [make_op(seq=1, data={"count": 5, "ratio": 0.5}), update, delete]
    await store.append_batch(ops)
    back = [d.operation for d in await read_all(store)]
    assert back == ops
    assert back[1].transaction_id == "tx-1"
    assert back[1].mutation_name == "bump"
    assert type(back[1].data["ratio"]) is float
    assert type(back[1].data["count"]) is int  # type: ignore[index]
    assert back[2].data is None
    assert back[2].previous_data is None
    assert await store.operations_in_range("node-a", 1, 3) == ops


async def test_version_vector_is_the_maximum_per_node(store: ServerStore) -> None:
    await store.append_batch([make_op(node="a", seq=3, record="x"), make_op(node="b", seq=1)])
    await store.append_batch([make_op(node="a", seq=1, record="y")])  # an older op arrives later
    assert await store.version_vector() == VersionVector({"a": 3, "b": 1})
    await store.append_batch([make_op(node="a", seq=7, record="z")])
    assert await store.version_vector() == VersionVector({"a": 7, "b": 1})


async def test_operations_in_range_is_inclusive_and_per_node(store: ServerStore) -> None:
    a_ops = inserts(6, node="a")
    await store.append_batch([*reversed(a_ops), *inserts(6, node="b")])
    assert await store.operations_in_range("a", 2, 4) == a_ops[1:4]
    assert await store.operations_in_range("a", 6, 6) == [a_ops[5]]
    assert await store.operations_in_range("a", 7, 9) == []
    assert await store.operations_in_range("c", 1, 9) == []


# ------------------------------------------------------------------ materialized records


async def test_records_follow_insert_update_delete_and_undelete(store: ServerStore) -> None:
    await store.append_batch([make_op(seq=1, data={"title": "milk", "owner": "u1"})])
    record = await store.find_record("todos", "r1")
    assert record is not None
    assert dict(record.fields) == {"title": "milk", "owner": "u1"}
    assert not record.deleted

    await store.append_batch([make_op(seq=2, kind=OpType.UPDATE, data={"title": "oat milk"})])
    record = await store.find_record("todos", "r1")
    assert record is not None
    assert dict(record.fields) == {"title": "oat milk", "owner": "u1"}

    await store.append_batch([make_op(seq=3, kind=OpType.DELETE)])
    deleted = await store.find_record("todos", "r1")
    assert deleted is not None
    assert deleted.deleted
    assert dict(deleted.fields) == {"title": "oat milk", "owner": "u1"}  # kept for scope checks
    assert await store.find_record("todos", "r1", include_deleted=False) is None

    await store.append_batch([make_op(seq=4, kind=OpType.UPDATE, data={"done": True})])
    revived = await store.find_record("todos", "r1", include_deleted=False)
    assert revived is not None
    assert not revived.deleted
    assert dict(revived.fields) == {"title": "oat milk", "owner": "u1", "done": True}
    assert await store.find_record("todos", "other") is None
    assert await store.find_record("notes", "r1") is None


def increment(node: str, seq: int, by: int, resolved: int) -> Operation:
    return make_op(
        node=node,
        seq=seq,
        kind=OpType.UPDATE,
        data={"count": resolved},
        atomic={"count": AtomicOp(AtomicOpType.INCREMENT, by)},
    )


async def test_concurrent_atomic_increments_compose(store: ServerStore) -> None:
    await store.append_batch([make_op(node="a", seq=1, data={"count": 0})])
    # Both clients resolved their increment against 0; the server must add both up.
    await store.append_batch([increment("a", 2, 5, 5)])
    await store.append_batch([increment("b", 3, 2, 2)])
    record = await store.find_record("todos", "r1")
    assert record is not None
    assert record.fields["count"] == 7


async def test_an_out_of_order_operation_refolds_the_record(store: ServerStore) -> None:
    insert = make_op(node="a", seq=1, data={"count": 0, "title": "t"})
    first, second = increment("a", 2, 5, 5), increment("b", 3, 2, 2)
    late_title = make_op(node="c", seq=2, kind=OpType.UPDATE, data={"title": "old"}, wall=BASE_WALL)
    await store.append_batch([second])  # newest first: an update before its insert
    await store.append_batch([insert, late_title])
    await store.append_batch([first])
    record = await store.find_record("todos", "r1")
    expected = fold([insert, first, second, late_title])
    assert expected is not None
    assert record == expected
    assert record.fields == {"count": 7, "title": "t"}


async def test_records_equal_the_fold_of_their_operations_in_any_arrival_order(
    store: ServerStore,
) -> None:
    seed = int(os.environ.get("KORA_TEST_SEED", random.randrange(2**32)))
    print(f"seed={seed}")
    rng = random.Random(seed)
    ops: list[Operation] = []
    for seq in range(1, 41):
        node = rng.choice(["a", "b", "c"])
        record = rng.choice(["r1", "r2", "r3"])
        kind = rng.choice([OpType.INSERT, OpType.UPDATE, OpType.UPDATE, OpType.DELETE])
        wall = BASE_WALL + rng.randrange(20)
        if kind is OpType.DELETE:
            ops.append(make_op(node=node, seq=seq, record=record, kind=kind, wall=wall))
        elif kind is OpType.INSERT or rng.random() < 0.5:
            value = rng.randrange(10)
            ops.append(
                make_op(node=node, seq=seq, record=record, kind=kind, data={"v": value}, wall=wall)
            )
        else:
            by = rng.randrange(1, 4)
            ops.append(
                make_op(
                    node=node,
                    seq=seq,
                    record=record,
                    kind=kind,
                    data={"n": by, "v": by},
                    atomic={"n": AtomicOp(AtomicOpType.INCREMENT, by)},
                    wall=wall,
                )
            )
    arrival = ops[:]
    rng.shuffle(arrival)
    while arrival:
        size = rng.randrange(1, 6)
        batch, arrival = arrival[:size], arrival[size:]
        await store.append_batch(batch)
    for record_id in ["r1", "r2", "r3"]:
        expected = fold([op for op in ops if op.record_id == record_id])
        assert await store.find_record("todos", record_id) == expected, f"seed={seed}"


# ------------------------------------------------------------------ admit and invalid ops


async def test_admit_rejects_without_storing_or_burning_a_sequence(store: ServerStore) -> None:
    allowed, refused, later = inserts(3)
    seen: list[tuple[str, RecordState | None]] = []

    def admit(op: Operation, record: RecordState | None) -> bool:
        seen.append((op.id, record))
        return op.id != refused.id

    result = await store.append_batch([allowed, refused, later, allowed], admit=admit)
    assert [(o.status, o.delivery_sequence) for o in result.outcomes] == [
        (AppendStatus.APPLIED, 1),
        (AppendStatus.REJECTED, None),
        (AppendStatus.APPLIED, 2),
        (AppendStatus.DUPLICATE, None),  # duplicates are not shown to admit
    ]
    assert [op_id for op_id, _ in seen] == [allowed.id, refused.id, later.id]
    assert await store.operation_count() == 2
    assert await store.find_record("todos", refused.record_id) is None
    assert await store.version_vector() == VersionVector({"node-a": 3})


async def test_admit_sees_the_record_including_earlier_ops_of_the_same_batch(
    store: ServerStore,
) -> None:
    await store.append_batch([make_op(seq=1, record="old", data={"owner": "u1"})])
    await store.append_batch([make_op(seq=2, record="old", kind=OpType.DELETE)])
    fresh_insert = make_op(seq=3, record="new", data={"owner": "u1"})
    fresh_update = make_op(seq=4, record="new", kind=OpType.UPDATE, data={"title": "x"})
    old_update = make_op(seq=5, record="old", kind=OpType.UPDATE, data={"title": "y"})
    seen: dict[str, RecordState | None] = {}

    def admit(op: Operation, record: RecordState | None) -> bool:
        seen[op.id] = record
        return True

    await store.append_batch([fresh_insert, fresh_update, old_update], admit=admit)
    assert seen[fresh_insert.id] is None
    in_batch = seen[fresh_update.id]
    assert in_batch is not None
    assert dict(in_batch.fields) == {"owner": "u1"}
    deleted = seen[old_update.id]
    assert deleted is not None
    assert deleted.deleted
    assert deleted.fields["owner"] == "u1"


async def test_an_op_whose_record_cannot_be_stored_is_invalid(store: ServerStore) -> None:
    await store.append_batch([make_op(seq=1, data={"count": 0, "big": 1e308})])
    await store.append_batch([increment("a", 2, 1, 1)])
    bad_type = make_op(
        node="a",
        seq=3,
        kind=OpType.UPDATE,
        data={"count": 1},
        atomic={"count": AtomicOp(AtomicOpType.INCREMENT, "x")},
    )
    overflow = [
        make_op(
            node="b",
            seq=seq,
            kind=OpType.UPDATE,
            data={"big": 1e308},
            atomic={"big": AtomicOp(AtomicOpType.INCREMENT, 1e308)},
            wall=BASE_WALL + 10 + seq,
        )
        for seq in (1, 2)
    ]
    good = make_op(node="a", seq=4, kind=OpType.UPDATE, data={"title": "ok"}, wall=BASE_WALL + 20)
    result = await store.append_batch([bad_type, *overflow, good])
    assert [o.status for o in result.outcomes] == [
        AppendStatus.APPLIED,  # the fold falls back to the resolved value: no harm done
        AppendStatus.APPLIED,  # the first atomic write of a field takes the resolved 1e308
        AppendStatus.INVALID,  # 1e308 + 1e308 would have to be stored as Infinity
        AppendStatus.APPLIED,
    ]
    assert [o.delivery_sequence for o in result.outcomes] == [3, 4, None, 5]
    assert await store.operation_count() == 5
    record = await store.find_record("todos", "r1")
    assert record is not None
    assert record.fields["count"] == 1
    assert record.fields["title"] == "ok"


async def test_an_op_whose_own_columns_cannot_be_stored_is_invalid_alone(
    store: ServerStore,
) -> None:
    # In-process callers can hand over what no wire frame carries (NaN in previous data).
    unstorable = make_op(seq=1, previous={"n": float("nan")})
    fine = make_op(seq=2, record="r2")
    result = await store.append_batch([unstorable, fine])
    assert [o.status for o in result.outcomes] == [AppendStatus.INVALID, AppendStatus.APPLIED]
    assert await store.operation_count() == 1


def test_the_plan_encodes_every_state_when_a_final_record_cannot_be_stored() -> None:
    # A stored state that cannot be stored again (only a broken reader gives one): the
    # per-operation checks see only the fields each op writes, so the final row fails and
    # the batch is planned again, encoding each state as it goes.
    broken = fold([make_op(seq=1, data={"bad": 1.0})])
    assert broken is not None
    broken = attrs.evolve(broken, fields={"bad": float("inf")})

    class Reader:
        def existing_ids(self, ids: Sequence[str]) -> set[str]:
            return set()

        def current_max_delivery_sequence(self) -> int:
            return 1

        def load_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, RecordState]:
            return {("todos", "r1"): broken}

        def load_record_operations(self, key: RecordKey) -> list[Operation]:
            raise AssertionError("no replay expected")

    ops = [make_op(seq=2, kind=OpType.UPDATE, data={"title": "t"}), make_op(seq=3, record="r2")]
    plan = plan_append(Reader(), ops, None)
    assert [o.status for o in plan.outcomes] == [AppendStatus.INVALID, AppendStatus.APPLIED]
    assert list(plan.record_rows) == [("todos", "r2")]


# ------------------------------------------------------------------ waiting and closing


async def test_wait_for_new_returns_at_once_when_already_above(store: ServerStore) -> None:
    await store.append_batch(inserts(2))
    assert await store.wait_for_new(0) == 2
    assert await store.wait_for_new(1) == 2


async def test_wait_for_new_wakes_on_an_append(store: ServerStore) -> None:
    woke: list[int] = []

    async def waiter() -> None:
        woke.append(await store.wait_for_new(0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        await store.append_batch(inserts(1))
    assert woke == [1, 1]


async def test_duplicates_alone_do_not_wake_waiters(store: ServerStore) -> None:
    ops = inserts(1)
    await store.append_batch(ops)
    with trio.move_on_after(0.2) as scope:  # real time: PostgreSQL wakes from another thread
        await store.append_batch(ops)
        await store.wait_for_new(1)
    assert scope.cancelled_caught


async def test_a_closed_store_refuses_use_and_wakes_waiters(open_store: OpenStore) -> None:
    async with open_store() as store:
        raised: list[BaseException] = []

        async def waiter() -> None:
            try:
                await store.wait_for_new(0)
            except ClosedError as exc:
                raised.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await store.aclose()
        assert len(raised) == 1
        with pytest.raises(ClosedError):
            await store.append_batch(inserts(1))
        with pytest.raises(ClosedError):
            await store.max_delivery_sequence()
        with pytest.raises(ClosedError):
            await store.wait_for_new(0)
        await store.aclose()  # idempotent


# ------------------------------------------------------------------ durability


async def test_a_reopened_store_keeps_everything(durable_open_store: OpenStore) -> None:
    ops = [
        make_op(seq=1, data={"owner": "u1"}, transaction_id="tx", mutation_name="add"),
        make_op(seq=2, kind=OpType.DELETE),
        *inserts(3, node="b"),
    ]
    async with durable_open_store() as store:
        await store.append_batch(ops[:2])
        await store.append_batch(ops[2:])
        before = (
            store.node_id,
            await read_all(store),
            await store.version_vector(),
            await store.find_record("todos", "r1"),
        )
    async with durable_open_store() as store:
        assert await store.max_delivery_sequence() == 5
        assert await store.wait_for_new(4) == 5
        after = (
            store.node_id,
            await read_all(store),
            await store.version_vector(),
            await store.find_record("todos", "r1"),
        )
        assert after == before
        assert after[1][0].operation.transaction_id == "tx"
        duplicate_and_new = await store.append_batch([ops[0], *inserts(1, node="c")])
        assert [o.delivery_sequence for o in duplicate_and_new.outcomes] == [None, 6]


async def test_the_node_id_of_a_database_is_kept(tmp_path: Path) -> None:
    async with open_sqlite_server_store(tmp_path / "s.db") as first:
        node_id = first.node_id
    async with open_sqlite_server_store(tmp_path / "s.db", node_id="other") as second:
        assert second.node_id == node_id
    async with open_sqlite_server_store(tmp_path / "t.db") as third:
        assert third.node_id != node_id


# ------------------------------------------------------------------ several processes


@pytest.mark.postgres
async def test_two_postgres_stores_share_one_gapless_delivery_order(
    postgres_target: PostgresTarget,
) -> None:
    seed = int(os.environ.get("KORA_TEST_SEED", random.randrange(2**32)))
    print(f"seed={seed}")
    rng = random.Random(seed)
    ops = inserts(60, node="a") + inserts(60, node="b")
    async with (
        open_postgres_server_store(postgres_target.dsn, schema=postgres_target.schema) as one,
        open_postgres_server_store(postgres_target.dsn, schema=postgres_target.schema) as two,
    ):
        assert one.node_id == two.node_id
        applied: list[DeliveredOperation] = []

        async def writer(store: ServerStore, batches: Sequence[Sequence[Operation]]) -> None:
            for batch in batches:
                applied.extend((await store.append_batch(batch)).applied)

        def random_batches() -> list[list[Operation]]:
            # Every op is sent by both "processes", so half of all appends are duplicates.
            shuffled = rng.sample(ops, len(ops))
            batches = []
            while shuffled:
                size = rng.randrange(1, 8)
                batches.append(shuffled[:size])
                shuffled = shuffled[size:]
            return batches

        async with trio.open_nursery() as nursery:
            for store in (one, two, one, two):  # two tasks per store, each on its connection
                nursery.start_soon(writer, store, random_batches())
        sequences = sorted(d.delivery_sequence for d in applied)
        assert sequences == list(range(1, len(ops) + 1)), f"seed={seed}"
        assert sorted(d.operation.id for d in applied) == sorted(op.id for op in ops)
        logged = await read_all(two, page=17)
        assert logged == sorted(applied, key=lambda d: d.delivery_sequence)
        assert await one.operation_count() == len(ops)
        assert await one.version_vector() == VersionVector({"a": 60, "b": 60})


@pytest.mark.postgres
async def test_a_commit_in_one_postgres_store_wakes_a_waiter_on_another(
    postgres_target: PostgresTarget,
) -> None:
    async with (
        open_postgres_server_store(postgres_target.dsn, schema=postgres_target.schema) as one,
        open_postgres_server_store(postgres_target.dsn, schema=postgres_target.schema) as two,
    ):
        await one.append_batch(inserts(1))
        with trio.fail_after(10):  # real time: the notification crosses the database
            assert await two.wait_for_new(0) == 1
            woke: list[int] = []

            async def waiter() -> None:
                woke.append(await two.wait_for_new(1))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await one.append_batch(inserts(2, first_seq=2))
        assert woke == [3]


def terminate_backends(target: PostgresTarget, role: str) -> int:
    """Kill the server side of this test's connections of one role, as a failover would."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name(role, target.schema),),
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
async def test_the_postgres_listener_reconnects_and_catches_up(
    postgres_target: PostgresTarget,
) -> None:
    async with (
        open_postgres_server_store(postgres_target.dsn, schema=postgres_target.schema) as one,
        open_postgres_server_store(postgres_target.dsn, schema=postgres_target.schema) as two,
    ):
        assert terminate_backends(postgres_target, "listener") == 2
        # This commit's notification is lost; the reconnected listener reads the counter.
        await one.append_batch(inserts(1))
        with trio.fail_after(10):  # real time: reconnecting takes a backoff delay
            assert await two.wait_for_new(0) == 1
            woke: list[int] = []

            async def waiter() -> None:
                woke.append(await two.wait_for_new(1))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await one.append_batch(inserts(1, first_seq=2))
        assert woke == [2]


@pytest.mark.postgres
async def test_a_postgres_store_reconnects_after_a_lost_connection(
    postgres_target: PostgresTarget,
) -> None:
    async with open_postgres_server_store(
        postgres_target.dsn, schema=postgres_target.schema
    ) as store:
        await store.append_batch(inserts(1))
        assert await store.operation_count() == 1
        assert terminate_backends(postgres_target, "writer") == 1
        assert terminate_backends(postgres_target, "reader") == 1
        with pytest.raises(ServerStoreError):
            await store.append_batch(inserts(1, first_seq=2))
        with pytest.raises(ServerStoreError):
            await store.operation_count()
        result = await store.append_batch(inserts(2, first_seq=2))
        assert [o.delivery_sequence for o in result.outcomes] == [2, 3]
        assert await store.operation_count() == 3


@pytest.mark.postgres
async def test_postgres_schemas_are_separate(postgres_target: PostgresTarget) -> None:
    async with open_postgres_server_store(postgres_target.dsn, schema=postgres_target.schema) as a:
        await a.append_batch(inserts(2))
        assert a.channel == f"kora_delivery_{postgres_target.schema}"
    other_schema = postgres_target.schema + "_2"
    try:
        async with open_postgres_server_store(postgres_target.dsn, schema=other_schema) as b:
            assert await b.max_delivery_sequence() == 0
    finally:
        with psycopg.connect(postgres_target.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(other_schema)))


def test_postgres_schema_names_are_checked() -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        PostgresServerStore("postgresql://x", schema='x"; DROP TABLE y; --')


# ------------------------------------------------------------------ choosing a store


@pytest.mark.parametrize(
    ("location", "kind"),
    [
        ("memory:", MemoryServerStore),
        ("server.db", SqliteServerStore),
        ("sqlite:server.db", SqliteServerStore),
        ("postgresql://postgres@127.0.0.1:5432/test", PostgresServerStore),
        ("postgres://postgres@127.0.0.1:5432/test", PostgresServerStore),
    ],
)
def test_create_server_store_picks_the_store_from_the_location(
    location: str, kind: type[ServerStore]
) -> None:
    assert type(create_server_store(location)) is kind


async def test_open_server_store_opens_and_closes(tmp_path: Path) -> None:
    async with open_server_store(tmp_path / "x.db") as store:
        assert isinstance(store, SqliteServerStore)
        assert store.path == str(tmp_path / "x.db")
        await store.append_batch(inserts(1))
    with pytest.raises(ClosedError):
        await store.operation_count()
    async with open_server_store("memory:") as memory:
        assert await memory.operation_count() == 0
