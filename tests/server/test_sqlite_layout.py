"""The SQLite server store's layout version: a database of the first layout is migrated when
opened, keeping every operation, record and the node id; a newer layout is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation
from kora.core.operations import create_operation
from kora.merge import fold
from kora.server.stores._codec import OPERATION_COLUMNS, RECORD_COLUMNS, operation_row, record_row
from kora.server.stores.base import AppendStatus, ServerStoreError
from kora.server.stores.sqlite import (
    SCHEMA_VERSION,
    SqliteServerStore,
    existing_ids_query,
    records_query,
)

WALL = 1_700_000_000_000
NODE_ID = "0190f0a0-0000-7000-8000-0000000000aa"

#: The first layout, as released (no user_version; ``id`` the primary key).
_V1_SCHEMA = (
    """CREATE TABLE kora_operations (
        id TEXT PRIMARY KEY,
        delivery_seq INTEGER NOT NULL UNIQUE,
        node_id TEXT NOT NULL,
        type TEXT NOT NULL,
        collection TEXT NOT NULL,
        record_id TEXT NOT NULL,
        data TEXT,
        previous_data TEXT,
        atomic_ops TEXT,
        wall_time INTEGER NOT NULL,
        logical INTEGER NOT NULL,
        timestamp_node_id TEXT NOT NULL,
        sequence_number INTEGER NOT NULL,
        causal_deps TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        transaction_id TEXT,
        mutation_name TEXT,
        received_at INTEGER NOT NULL
    )""",
    "CREATE INDEX kora_operations_node_seq ON kora_operations (node_id, sequence_number)",
    "CREATE INDEX kora_operations_record ON kora_operations (collection, record_id)",
    """CREATE TABLE kora_records (
        collection TEXT NOT NULL,
        record_id TEXT NOT NULL,
        fields TEXT NOT NULL,
        field_versions TEXT NOT NULL,
        field_atomic TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        version TEXT NOT NULL,
        created_version TEXT NOT NULL,
        last_op_id TEXT NOT NULL,
        PRIMARY KEY (collection, record_id)
    )""",
    """CREATE TABLE kora_version_vector (
        node_id TEXT PRIMARY KEY,
        max_sequence_number INTEGER NOT NULL
    )""",
    """CREATE TABLE kora_delivery_counter (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
    )""",
    "CREATE TABLE kora_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def op(seq: int, record: str) -> Operation:
    return create_operation(
        type="insert",
        node_id="node-a",
        collection="todos",
        record_id=record,
        data={"n": seq},
        previous_data=None,
        timestamp=HLCTimestamp(WALL + seq, 0, "node-a"),
        sequence_number=seq,
    )


def write_v1_database(path: Path, ops: list[Operation]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in _V1_SCHEMA:
            conn.execute(statement)
        conn.executemany(
            f"INSERT INTO kora_operations ({', '.join(OPERATION_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in OPERATION_COLUMNS)})",
            # Delivery sequences out of insertion order: the migration keeps delivery order.
            [operation_row(o, seq, WALL) for seq, o in reversed(list(enumerate(ops, 1)))],
        )
        records = {o.record_id: fold([o]) for o in ops}
        conn.executemany(
            f"INSERT INTO kora_records ({', '.join(RECORD_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)})",
            [record_row(state) for state in records.values() if state is not None],
        )
        conn.execute("INSERT INTO kora_version_vector VALUES ('node-a', ?)", (len(ops),))
        conn.execute("INSERT INTO kora_delivery_counter VALUES (1, ?)", (len(ops),))
        conn.execute("INSERT INTO kora_meta VALUES ('node_id', ?)", (NODE_ID,))
    finally:
        conn.close()


async def test_a_first_layout_database_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    ops = [op(seq, f"r{seq % 3}") for seq in range(1, 8)]
    write_v1_database(path, ops)
    async with SqliteServerStore(path) as store:
        assert store.node_id == NODE_ID
        delivered = await store.operations_after_delivery(0, 100)
        assert [(d.operation, d.delivery_sequence) for d in delivered] == [
            (o, seq) for seq, o in enumerate(ops, 1)
        ]
        assert await store.max_delivery_sequence() == len(ops)
        assert (await store.version_vector()).get("node-a") == len(ops)
        record = await store.find_record("todos", "r1")
        assert record is not None
        assert record.last_op_id == ops[6].id
        # Stored ids are still found (dedup), and new operations follow the old ones.
        result = await store.append_batch([ops[2], op(8, "r8")])
        assert [o.status for o in result.outcomes] == [
            AppendStatus.DUPLICATE,
            AppendStatus.APPLIED,
        ]
        assert result.outcomes[1].delivery_sequence == len(ops) + 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                ("kora_operations",),
            )
        }
        assert {"kora_operations_id", "kora_operations_node_seq", "kora_operations_record"} <= (
            indexes
        )
        assert conn.execute("SELECT count(*) FROM kora_operations").fetchone() == (len(ops) + 1,)
    finally:
        conn.close()
    async with SqliteServerStore(path) as reopened:  # already current: nothing to do
        assert await reopened.operation_count() == len(ops) + 1


async def test_a_new_database_starts_at_the_current_layout(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    async with SqliteServerStore(path) as store:
        await store.append_batch([op(1, "r1")])
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        conn.close()


async def test_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SqliteServerStore(path)
    with pytest.raises(ServerStoreError, match="newer"):
        await store.open()
    await store.aclose()


@pytest.mark.parametrize("count", [1, 2, 250])
async def test_the_appends_reads_probe_indexes(tmp_path: Path, count: int) -> None:
    # A scan of kora_operations or kora_records per append grows with the database: with
    # 100,000 operations a single-operation append took 14 ms instead of 0.25 ms.
    path = tmp_path / "server.db"
    async with SqliteServerStore(path):
        pass
    conn = sqlite3.connect(path)
    try:
        for query, parameters, index in (
            (existing_ids_query(count), ["x"] * (2 * count), "kora_operations_id"),
            (records_query(count), ["x"] * (count + 1), "sqlite_autoindex_kora_records_1"),
        ):
            plan = " ".join(
                row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", parameters)
            )
            assert f"USING INDEX {index}" in plan
            assert "SCAN" not in plan
    finally:
        conn.close()
