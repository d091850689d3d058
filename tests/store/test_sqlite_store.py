"""What only the SQLite store has: persistence, migrations, pragmas, indexes, closing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
from store_helpers import START_MS, ManualClock

from kora.core.operation import AtomicOp, AtomicOpType, OpType
from kora.store import (
    LocalMutation,
    SQLiteStore,
    StoreVersionError,
    open_sqlite_store,
    open_store,
)
from kora.store import _sqlite_schema as schema


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "app.db")
    clock = ManualClock()
    async with open_sqlite_store(path, physical_clock=clock) as store:
        node = store.node_id
        a = await store.write_local(LocalMutation.insert("todos", {"n": 1}, record_id="a"))
        b = await store.write_local(
            LocalMutation.update("todos", "a", atomic={"n": AtomicOp(AtomicOpType.INCREMENT, 2)})
        )
        c = await store.write_local(LocalMutation.insert("todos", {"n": 5}, record_id="c"))
        await store.acknowledge([a.id])
        await store.reject(c.id, code="NOPE", message="m", retriable=True)
        await store.set_delivery_watermark("view", 42)
        await store.set_meta("setting", "kept")
        last = await store.last_timestamp()
        vector = await store.version_vector()
        record_before = await store.get("todos", "a")
    clock.now = START_MS - 1000  # the physical clock went back while we were closed
    async with open_sqlite_store(path, physical_clock=clock) as store:
        assert store.node_id == node
        assert await store.version_vector() == vector
        assert await store.last_timestamp() == last
        assert await store.pending() == [b]
        assert [r.op_id for r in await store.rejected_operations()] == [c.id]
        assert await store.delivery_watermark("view") == 42
        assert await store.get_meta("setting") == "kept"
        assert await store.get("todos", "a") == record_before
        assert await store.operations_in_range(node, 1, 3) == [a, b, c]
        d = await store.write_local(LocalMutation.update("todos", "c", {"n": 6}))
        assert d.sequence_number == 4
        assert d.causal_deps == (c.id,)  # the last local op of the collection, from the log
        assert last is not None
        assert d.timestamp > last  # the HLC never goes back across a restart


async def test_a_rebase_is_durable(tmp_path: Path) -> None:
    path = str(tmp_path / "app.db")
    clock = ManualClock(START_MS + 600_000)
    async with open_sqlite_store(path, physical_clock=clock) as store:
        ops = [
            await store.write_local(LocalMutation.insert("todos", {"n": n}, record_id=f"r{n}"))
            for n in range(3)
        ]
        assert await store.rebase_pending(START_MS) == 3
        rebased = await store.pending()
        last = await store.last_timestamp()
        records = [await store.get("todos", f"r{n}") for n in range(3)]
    async with open_sqlite_store(path, physical_clock=clock) as store:
        assert await store.pending() == rebased
        assert {op.id for op in rebased}.isdisjoint(op.id for op in ops)
        assert await store.last_timestamp() == last  # the clock was persisted back in time
        assert [await store.get("todos", f"r{n}") for n in range(3)] == records
        assert await store.acknowledge([op.id for op in rebased]) == 3


async def test_acknowledgments_dequeue_exactly_their_operations(tmp_path: Path) -> None:
    # Operations written in this session are dequeued by their rowid, the others (and the
    # ids a rebase renamed) through the id index: the same operations either way.
    path = str(tmp_path / "app.db")
    clock = ManualClock(START_MS + 600_000)
    async with open_sqlite_store(path, physical_clock=clock) as store:
        before = await store.write_local_many(
            [LocalMutation.insert("todos", {"n": n}, record_id=f"r{n}") for n in range(3)]
        )
    async with open_sqlite_store(path, physical_clock=clock) as store:
        ops = await store.write_local_many(
            [LocalMutation.update("todos", "r0", {"n": n}) for n in range(5)], transaction_id="t"
        )
        ops += await store.write_local_many([LocalMutation.update("todos", "r1", {"n": 9})])
        assert await store.acknowledge([ops[1].id, before[2].id, ops[3].id, "f" * 64]) == 3
        assert await store.acknowledge([ops[1].id]) == 0
        expected = [before[0], before[1], ops[0], ops[2], ops[4], ops[5]]
        assert [op.id for op in await store.pending()] == [op.id for op in expected]
        assert await store.rebase_pending(START_MS) == 6
        rebased = await store.pending()
        assert await store.acknowledge([op.id for op in expected], power_safe=False) == 0
        assert await store.acknowledge([rebased[4].id, rebased[0].id], power_safe=False) == 2
        assert await store.pending() == [rebased[1], rebased[2], rebased[3], rebased[5]]
        await store.reject(rebased[1].id, code="NOPE", message="m", retriable=False)
        assert await store.acknowledge([op.id for op in rebased]) == 3
        assert await store.pending() == []


async def test_a_clock_brought_back_to_nothing_is_persisted_so(tmp_path: Path) -> None:
    path = str(tmp_path / "app.db")
    clock = ManualClock(START_MS + 600_000)
    async with open_sqlite_store(path, physical_clock=clock) as store:
        op = await store.write_local(LocalMutation.insert("todos", {"n": 1}))
        await store.acknowledge([op.id])
        assert await store.rebase_pending(START_MS) == 0
        assert await store.last_timestamp() is None  # nothing it holds is within the limit
    async with open_sqlite_store(path, physical_clock=clock) as store:
        assert await store.last_timestamp() is None


async def test_pragmas_are_wal_and_full(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "p.db")) as store:
        assert isinstance(store, SQLiteStore)
        journal, sync = await store._run(
            lambda conn: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert (journal, sync) == ("wal", 2)
    async with open_sqlite_store(str(tmp_path / "n.db"), synchronous="NORMAL") as store:
        (sync,) = await store._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
        assert sync == 1


async def test_a_newer_database_is_refused_and_an_older_one_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "m.db")
    async with open_sqlite_store(path) as store:
        await store.write_local(LocalMutation.insert("todos", {"n": 1}, record_id="a"))
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreVersionError, match="newer"):
        async with open_sqlite_store(path):
            pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
    conn.close()

    # A future version 2 adds a table; opening runs the step once and keeps the data.
    def add_notes(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE migrated_marker (x INTEGER)")

    monkeypatch.setitem(schema.MIGRATIONS, schema.SCHEMA_VERSION, add_notes)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    async with open_sqlite_store(path) as store:
        assert await store.get("todos", "a") is not None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM migrated_marker").fetchone()[0] == 0
    conn.close()


async def test_a_database_belongs_to_one_node(tmp_path: Path) -> None:
    path = str(tmp_path / "node.db")
    async with open_sqlite_store(path, node_id="node-a") as store:
        assert store.node_id == "node-a"
    with pytest.raises(StoreVersionError, match="node-a"):
        async with open_sqlite_store(path, node_id="node-b"):
            pass


async def test_queries_create_and_use_an_index(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "i.db")) as store:
        await store.write_local_many(
            [LocalMutation.insert("todos", {"s": i % 3, "p": i}) for i in range(50)]
        )
        top = await store.query("todos", [("s", "==", 1)], [("p", True)], limit=2)
        assert [r.fields["p"] for r in top] == [49, 46]

        def plan(conn: sqlite3.Connection) -> str:
            rows = conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM records WHERE collection = 'todos' AND "
                "deleted = 0 AND json_extract(data, '$.\"s\"') IS 1 "
                "ORDER BY json_extract(data, '$.\"p\"') DESC, id ASC LIMIT 2"
            ).fetchall()
            return " ".join(str(row[-1]) for row in rows)

        assert "USING INDEX kx_" in await store._run(plan)
        await store.ensure_index("todos", ["p"])
        names = await store._run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'kx%'"
            ).fetchone()[0]
        )
        assert names == 2


async def test_memory_path_gives_a_sqlite_database_and_none_a_memory_store(
    tmp_path: Path,
) -> None:
    async with open_store(":memory:") as store:
        assert isinstance(store, SQLiteStore)
        await store.write_local(LocalMutation.insert("t", {"a": 1}))
    async with open_store(tmp_path / "pathlike.db") as store:
        assert isinstance(store, SQLiteStore)
    async with open_store(None) as store:
        assert not isinstance(store, SQLiteStore)


async def test_close_happens_even_when_cancelled(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    with trio.CancelScope() as scope:
        async with open_sqlite_store(path) as store:
            await store.write_local(LocalMutation.insert("t", {"a": 1}))
            scope.cancel()
            await trio.sleep_forever()
    assert store._closed
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM ops").fetchone()[0] == 1
    conn.close()


async def test_concurrent_writers_are_serialized(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "w.db")) as store:
        async with trio.open_nursery() as nursery:
            for index in range(100):
                nursery.start_soon(store.write_local, LocalMutation.insert("t", {"i": index}))
        ops = await store.pending()
        assert sorted(op.sequence_number for op in ops) == list(range(1, 101))
        assert await store.count("t") == 100
        assert store.statistics().tasks_waiting == 0


async def test_an_unsynced_acknowledgment_keeps_the_synchronous_setting(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "s.db")) as store:
        op = await store.write_local(LocalMutation.insert("todos", {"n": 1}))
        await store.acknowledge([op.id], power_safe=False)
        (level,) = await store._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
        assert level == 2  # FULL again for every later commit
    async with open_sqlite_store(str(tmp_path / "s.db")) as store:
        assert await store.pending_count() == 0


async def test_a_deferred_acknowledgment_shares_the_next_call_and_runs_at_close(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "d.db")
    async with open_sqlite_store(path) as store:
        one, two, three = [
            await store.write_local(LocalMutation.insert("todos", {"n": n})) for n in range(3)
        ]
        await store.acknowledge_soon([one.id])
        (level,) = await store._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
        assert level == 2  # FULL again after the deferred, unsynced dequeue
        assert await store.pending_count() == 2
        await store.acknowledge_soon([two.id])
    async with open_sqlite_store(path) as store:
        assert [op.id for op in await store.pending()] == [three.id]


async def test_a_version_1_database_is_migrated_with_its_log_and_queue(tmp_path: Path) -> None:
    """Schema v2 rebuilds the op log without the unique index on whole ids; rowids (which
    the queue refers to), rows and the queue survive, and lookups by id use the new index."""
    path = str(tmp_path / "v1.db")
    async with open_sqlite_store(path) as store:
        node = store.node_id
        ops = await store.write_local_many(
            [LocalMutation.insert("todos", {"n": n}) for n in range(5)], transaction_id="t"
        )
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    # Back to exactly what version 1 wrote: its op log table, the same rows and rowids.
    rows = conn.execute("SELECT * FROM ops ORDER BY rowid").fetchall()
    conn.execute("DROP TABLE ops")
    for statement in schema._V1.split(";"):
        if "CREATE TABLE ops" in statement or "ops_by_record" in statement:
            conn.execute(statement)
    conn.executemany(f"INSERT INTO ops VALUES ({','.join('?' * len(rows[0]))})", rows)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()

    async with open_sqlite_store(path) as store:
        assert store.node_id == node
        assert [op.id for op in await store.pending()] == [op.id for op in ops]
        assert await store.acknowledge([ops[0].id, ops[2].id]) == 2
        assert await store.reject(ops[1].id, code="X", message="m", retriable=False) is not None
        assert [op.id for op in await store.pending()] == [ops[3].id, ops[4].id]
        again = await store.apply_remote(ops)
        assert again.duplicates == 5
        more = await store.write_local(LocalMutation.insert("todos", {"n": 9}))
        assert more.sequence_number == 6
        assert more.causal_deps == (ops[-1].id,)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 2
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ops_by_id", "ops_by_record"} <= indexes
    conn.close()


async def test_lookups_by_operation_id_use_the_id_index(tmp_path: Path) -> None:
    from kora.store.sqlite import _OP_BY_ID

    async with open_sqlite_store(str(tmp_path / "x.db")) as store:
        op = await store.write_local(LocalMutation.insert("todos", {"n": 1}))

        def plans(conn: sqlite3.Connection) -> list[str]:
            queries = [
                (f"SELECT rowid FROM ops WHERE {_OP_BY_ID}", (op.id[:8], op.id)),
                (
                    "DELETE FROM outbound WHERE op_rowid = "
                    f"(SELECT rowid FROM ops WHERE {_OP_BY_ID})",
                    (op.id[:8], op.id),
                ),
                ("SELECT id FROM ops WHERE substr(id, 1, 8) IN (?, ?)", ("a", "b")),
            ]
            return [
                " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {q}", p))
                for q, p in queries
            ]

        for plan in await store._run(plans):
            assert "USING INDEX ops_by_id" in plan, plan


@pytest.mark.parametrize("seed", range(8))
async def test_updates_in_one_transaction_store_what_create_operation_and_fold_give(
    tmp_path: Path, seed: int
) -> None:
    # The planner builds plain updates directly and reuses the previous data's JSON when
    # it can: every row must still hold exactly the operation's columns, and the record
    # the fold of its operations.
    import json
    import random

    from kora.merge import fold
    from kora.store._fast_ops import encode_sorted

    rng = random.Random(seed)
    path = str(tmp_path / "app.db")
    async with open_sqlite_store(path) as store:
        await store.write_local_many(
            [LocalMutation.insert("todos", {"a": 0, "b": "x"}, record_id=r) for r in "rs"]
        )
        mutations: list[LocalMutation] = []
        for index in range(60):
            record = rng.choice("rs")
            kind = rng.random()
            if kind < 0.6:
                fields = rng.choice([["a"], ["b"], ["a", "b"], ["c"], ["a", "c"]])
                value = rng.choice([index, f"v{index}", [index, (1, 2)], {"n": index}, 1.5])
                mutations.append(
                    LocalMutation.update("todos", record, dict.fromkeys(fields, value))
                )
            elif kind < 0.8:
                atomic = {"a": AtomicOp(AtomicOpType.INCREMENT, 2)}
                mutations.append(LocalMutation.update("todos", record, atomic=atomic))
            elif kind < 0.9:
                mutations.append(LocalMutation.delete("todos", record))
                mutations.append(LocalMutation.insert("todos", {"a": index}, record_id=record))
            else:
                mutations.append(LocalMutation.update("todos", record, {"a": index, "d": None}))
        ops = await store.write_local_many(mutations, transaction_id="t")
        records = {r: await store.get("todos", r) for r in "rs"}
    conn = sqlite3.connect(path)
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT id, data, previous_data FROM ops WHERE transaction_id = 't'"
        )
    }
    conn.close()
    stored_ops = {r: [op for op in ops if op.record_id == r] for r in "rs"}
    for op in ops:
        data_text, previous_text = rows[op.id]
        assert op.verify_id()
        if op.data is None:
            assert data_text is None
        else:
            assert json.loads(data_text) == op.data
            assert data_text == encode_sorted(op.data)
        expected_previous = None if op.previous_data is None else encode_sorted(op.previous_data)
        assert previous_text == expected_previous
    async with open_sqlite_store(path) as store:
        for r in "rs":
            log = await store.operations_for_record("todos", r)
            assert [op for op in log if op.transaction_id == "t"] == stored_ops[r]
            state = fold(log)
            assert state is not None
            record = records[r]
            assert record is not None
            assert dict(record.fields) == dict(state.fields)
            assert record.version == state.version
            for position, op in enumerate(log):
                if op.type is OpType.UPDATE:
                    before = fold(log[:position])
                    assert before is not None
                    old = before.fields
                    assert op.previous_data == {k: old[k] for k in op.data or {} if k in old}
