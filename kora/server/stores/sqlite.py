"""``SqliteServerStore``: the embedded default store of ``kora serve``.

One ``sqlite3`` connection is used from trio's worker threads, one job at a time in arrival
order (this store's own ``SerialWorker``: style anchors 4.1, pattern A, without
``to_thread.run_sync``'s per-call overhead).  Each job is one synchronous function; a write
is one ``BEGIN IMMEDIATE ... COMMIT``.

Group commit: batches that arrive while a commit is running wait in a queue, and the next
write takes all of them into one transaction, planned one after the other exactly as separate
transactions in that order would be (each sees the rows of those before it).  Every caller
gets its own batch's outcomes once that transaction committed, so an acknowledgment still
follows its commit; several sessions' batches share one fsync.  If a shared transaction
fails, each batch is tried again alone, so one batch's failure is only its own.

Durability: WAL with ``synchronous=FULL``.  The server acknowledges a batch only after its
commit, and those acknowledgements are promises to other devices, so a commit must survive a
power loss too, not only a crash of the process (reliability 2.2).  One transaction per client
batch, and several batches per transaction when they wait at the same time, is what keeps
FULL affordable.

The delivery sequence is kept in a one-row counter table updated in the append transaction;
``BEGIN IMMEDIATE`` takes the write lock first, so even several processes sharing the file
would assign sequences in commit order.  Only this process is woken by ``wait_for_new``,
though: use PostgreSQL to run several server processes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

import attrs
import trio

from kora.core.errors import ClosedError
from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.merge import RecordState
from kora.server.stores._append import AppendPlan, RecordKey, plan_append
from kora.server.stores._codec import (
    OPERATION_COLUMNS,
    OPERATION_SELECT,
    RECORD_COLUMNS,
    RECORD_SELECT,
    delivery_sequence_of_row,
    operation_from_row,
    record_from_row,
)
from kora.server.stores._signal import CommitSignal
from kora.server.stores._worker import SerialWorker
from kora.server.stores.base import (
    Admit,
    AppendResult,
    DeliveredOperation,
    ServerStore,
    ServerStoreError,
)

__all__ = ["SqliteServerStore", "open_sqlite_server_store"]

T = TypeVar("T")

#: How long a job waits for another process's write lock before failing with "busy".
BUSY_TIMEOUT_SECONDS: Final = 5.0
#: How long closing may take when the caller is being cancelled.
CLOSE_TIMEOUT_SECONDS: Final = 5.0

#: The store's layout version, in ``PRAGMA user_version`` (0: a new file, or a file of the
#: first layout, which had no version).
SCHEMA_VERSION: Final = 2

#: The operation log, version 2.  The delivery sequence is the rowid: every insert appends
#: to the end of the table, and delivery reads are a range of it.  Ids are found through an
#: index on their first 8 hex digits, not a unique index on all 64: content ids are random,
#: so each insert into such an index lands on a random page of it (with a large log, a page
#: per operation to write back at every commit).  An id is still stored at most once: the
#: planner looks every incoming id up, in the write transaction, before inserting.
_OPERATIONS_TABLE: Final = """CREATE TABLE kora_operations (
        delivery_seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
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
    )"""

_OPERATION_INDEXES: Final = (
    "CREATE INDEX kora_operations_id ON kora_operations (substr(id, 1, 8))",
    "CREATE INDEX kora_operations_node_seq ON kora_operations (node_id, sequence_number)",
    "CREATE INDEX kora_operations_record ON kora_operations (collection, record_id)",
)

_OTHER_TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS kora_records (
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
    """CREATE TABLE IF NOT EXISTS kora_version_vector (
        node_id TEXT PRIMARY KEY,
        max_sequence_number INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kora_delivery_counter (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO kora_delivery_counter (id, value) VALUES (1, 0)",
    """CREATE TABLE IF NOT EXISTS kora_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
)

#: Version 1 to 2: the same rows, in delivery order, in the new operation table.  (Version 1
#: had ``id TEXT PRIMARY KEY`` and ``delivery_seq INTEGER NOT NULL UNIQUE``.)
_OPERATIONS_V1_TO_V2: Final = (
    "ALTER TABLE kora_operations RENAME TO kora_operations_v1",
    _OPERATIONS_TABLE,
    f"INSERT INTO kora_operations ({', '.join(OPERATION_COLUMNS)}) "
    f"SELECT {', '.join(OPERATION_COLUMNS)} FROM kora_operations_v1 ORDER BY delivery_seq",
    "DROP TABLE kora_operations_v1",  # and its indexes
    *_OPERATION_INDEXES,
)

_INSERT_OPERATION: Final = (
    f"INSERT INTO kora_operations ({', '.join(OPERATION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in OPERATION_COLUMNS)})"
)
_UPSERT_RECORD: Final = (
    f"INSERT OR REPLACE INTO kora_records ({', '.join(RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)})"
)
_UPSERT_VERSION: Final = (
    "INSERT INTO kora_version_vector (node_id, max_sequence_number) VALUES (?, ?) "
    "ON CONFLICT (node_id) DO UPDATE SET "
    "max_sequence_number = max(max_sequence_number, excluded.max_sequence_number)"
)


class SqliteServerStore(ServerStore):
    """The server store in one SQLite file (``":memory:"`` works too, for throwaway use).

    Args:
        path: The database file; created with its tables if missing.
        node_id: The server's node id for a new database; an existing database keeps the
            one it was created with (a fresh UUIDv7 if omitted).
    """

    def __init__(self, path: str | Path, *, node_id: str | None = None) -> None:
        self._path = str(path)
        self._requested_node_id = node_id
        self._node_id: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._worker = SerialWorker()
        self._signal = CommitSignal()
        self._opening = False
        self._closed = False
        self._queued: list[_QueuedAppend] = []
        self._writing = False
        self._written = trio.Event()

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            raise ClosedError("the server store is not open")
        return self._node_id

    @property
    def path(self) -> str:
        return self._path

    def queue_depth(self) -> int:
        """How many jobs wait for the connection (for diagnostics)."""
        return self._worker.waiting()

    async def open(self) -> None:
        if self._closed:
            raise ClosedError("the server store is closed")
        if self._opening:
            return
        self._opening = True
        candidate = self._requested_node_id or uuid7()
        try:
            conn, node_id, known = await self._run_unopened(lambda: _connect(self._path, candidate))
        except BaseException:
            self._opening = False
            raise
        if self._closed:  # closed while connecting
            conn.close()
            raise ClosedError("the server store is closed")
        self._conn, self._node_id = conn, node_id
        self._signal.advance(known)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._signal.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            # Shielded so that the close runs at all when our caller is being cancelled.
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS, shield=True):
                await self._worker.run(conn.close)

    async def _run_unopened(self, job: Callable[[], T]) -> T:
        try:
            return await self._worker.run(job)
        except sqlite3.Error as exc:
            if self._closed:
                raise ClosedError("the server store is closed") from exc
            raise ServerStoreError(f"SQLite server store {self._path}: {exc}") from exc

    async def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise ClosedError("the server store is closed" if self._closed else "not open")
        return await self._run_unopened(lambda: job(conn))

    async def append_batch(
        self, ops: Sequence[Operation], *, admit: Admit | None = None
    ) -> AppendResult:
        queued = _QueuedAppend(tuple(ops), admit, int(time.time() * 1000))
        self._queued.append(queued)
        try:
            while queued.plan is None and queued.error is None:
                if self._writing:
                    await self._written.wait()
                else:
                    await self._write_queued()
        except BaseException:
            if queued in self._queued:  # not taken yet: it will never be written
                self._queued.remove(queued)
            raise
        if queued.error is not None:
            raise queued.error
        assert queued.plan is not None
        return AppendResult(queued.plan.outcomes, queued.plan.max_delivery_sequence)

    async def _write_queued(self) -> None:
        """Write every queued batch in one transaction (then, after a failure, one by one)."""
        self._writing = True
        group, self._queued = self._queued, []
        try:
            if not group:
                return
            try:
                plans = await self._run(lambda conn: _append_group(conn, group))
            except Exception as exc:
                if len(group) == 1:
                    group[0].error = exc
                else:
                    await self._write_alone(group)
                return
            for queued, plan in zip(group, plans, strict=True):
                queued.plan = plan
            self._signal.advance(plans[-1].max_delivery_sequence)
        finally:
            # Interrupted (cancelled before the job started, or between the retries): what
            # has no outcome was not written and waits for the next write.
            self._queued[:0] = [q for q in group if q.plan is None and q.error is None]
            self._writing = False
            written, self._written = self._written, trio.Event()
            written.set()

    async def _write_alone(self, group: list[_QueuedAppend]) -> None:
        for queued in group:
            try:
                (queued.plan,) = await self._run(partial(_append_group, group=[queued]))
            except Exception as exc:
                queued.error = exc
            else:
                self._signal.advance(queued.plan.max_delivery_sequence)

    async def max_delivery_sequence(self) -> int:
        return await self._run(_max_delivery_sequence)

    async def operations_after_delivery(self, after: int, limit: int) -> list[DeliveredOperation]:
        def job(conn: sqlite3.Connection) -> list[DeliveredOperation]:
            rows = conn.execute(
                f"SELECT {OPERATION_SELECT} FROM kora_operations "
                "WHERE delivery_seq > ? ORDER BY delivery_seq LIMIT ?",
                (after, max(limit, 0)),
            ).fetchall()
            return [
                DeliveredOperation(operation_from_row(row), delivery_sequence_of_row(row))
                for row in rows
            ]

        return await self._run(job)

    async def version_vector(self) -> VersionVector:
        def job(conn: sqlite3.Connection) -> VersionVector:
            rows = conn.execute(
                "SELECT node_id, max_sequence_number FROM kora_version_vector"
            ).fetchall()
            return VersionVector({node: int(sequence) for node, sequence in rows})

        return await self._run(job)

    async def operations_in_range(
        self, node_id: str, from_seq: int, to_seq: int
    ) -> list[Operation]:
        def job(conn: sqlite3.Connection) -> list[Operation]:
            rows = conn.execute(
                f"SELECT {OPERATION_SELECT} FROM kora_operations "
                "WHERE node_id = ? AND sequence_number BETWEEN ? AND ? "
                "ORDER BY sequence_number, delivery_seq",
                (node_id, from_seq, to_seq),
            ).fetchall()
            return [operation_from_row(row) for row in rows]

        return await self._run(job)

    async def find_record(
        self, collection: str, record_id: str, *, include_deleted: bool = True
    ) -> RecordState | None:
        state = await self._run(lambda conn: _load_record(conn, (collection, record_id)))
        if state is None or (state.deleted and not include_deleted):
            return None
        return state

    async def operation_count(self) -> int:
        def job(conn: sqlite3.Connection) -> int:
            (count,) = conn.execute("SELECT count(*) FROM kora_operations").fetchone()
            return int(count)

        return await self._run(job)

    async def wait_for_new(self, after: int) -> int:
        if self._conn is None:
            raise ClosedError("the server store is closed" if self._closed else "not open")
        return await self._signal.wait_above(after)


def _connect(path: str, candidate_node_id: str) -> tuple[sqlite3.Connection, str, int]:
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        node_id, known = _write_transaction(conn, lambda: _create_schema(conn, candidate_node_id))
    except BaseException:
        conn.close()
        raise
    return conn, node_id, known


def _create_schema(conn: sqlite3.Connection, candidate_node_id: str) -> tuple[str, int]:
    _migrate(conn)
    conn.execute(
        "INSERT OR IGNORE INTO kora_meta (key, value) VALUES ('node_id', ?)", (candidate_node_id,)
    )
    (node_id,) = conn.execute("SELECT value FROM kora_meta WHERE key = 'node_id'").fetchone()
    return str(node_id), _max_delivery_sequence(conn)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the open write transaction's database to ``SCHEMA_VERSION``, keeping its data."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise ServerStoreError(
            f"the database has server store layout version {found}, newer than this Kora "
            f"knows ({SCHEMA_VERSION}): use a newer Kora"
        )
    if found == SCHEMA_VERSION:
        return
    (has_operations,) = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'kora_operations'"
    ).fetchone()
    # Version 1 left user_version at 0: its operation table is what tells it from a new file.
    steps = _OPERATIONS_V1_TO_V2 if has_operations else (_OPERATIONS_TABLE, *_OPERATION_INDEXES)
    for statement in (*steps, *_OTHER_TABLES):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _write_transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (disk full, ...)
            conn.execute("ROLLBACK")
        raise
    return result


def _max_delivery_sequence(conn: sqlite3.Connection) -> int:
    (value,) = conn.execute("SELECT value FROM kora_delivery_counter WHERE id = 1").fetchone()
    return int(value)


def _load_record(conn: sqlite3.Connection, key: RecordKey) -> RecordState | None:
    row = conn.execute(
        f"SELECT {RECORD_SELECT} FROM kora_records WHERE collection = ? AND record_id = ?", key
    ).fetchone()
    return None if row is None else record_from_row(row)


def existing_ids_query(count: int) -> str:
    """Which of ``count`` ids are stored: parameters are their first 8 characters, then the
    ids.  The index holds the first 8 characters, the second test keeps whole ids; its unary
    plus keeps SQLite from propagating a single ``id = ?`` into ``substr(id, 1, 8)``, which
    would make the planner scan the table instead."""
    marks = ", ".join("?" for _ in range(count))
    return (
        f"SELECT id FROM kora_operations WHERE substr(id, 1, 8) IN ({marks}) AND +id IN ({marks})"
    )


def records_query(count: int) -> str:
    """The records of one collection (the first parameter) with any of ``count`` ids."""
    marks = ", ".join("?" for _ in range(count))
    return (
        f"SELECT {RECORD_SELECT} FROM kora_records WHERE collection = ? AND record_id IN ({marks})"
    )


class _SqliteReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 250):  # two host parameters per id, under 999
            chunk = ids[start : start + 250]
            rows = self._conn.execute(
                existing_ids_query(len(chunk)), [*(op_id[:8] for op_id in chunk), *chunk]
            ).fetchall()
            found.update(row[0] for row in rows)
        return found

    def current_max_delivery_sequence(self) -> int:
        return _max_delivery_sequence(self._conn)

    def load_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, RecordState]:
        # One query per collection: "(collection, record_id) IN (VALUES ...)" would scan the
        # whole table (SQLite 3.40 does not probe the primary key with row values), while
        # "collection = ? AND record_id IN (...)" does.
        by_collection: dict[str, list[str]] = {}
        for collection, record_id in keys:
            by_collection.setdefault(collection, []).append(record_id)
        found: dict[RecordKey, RecordState] = {}
        for collection, record_ids in by_collection.items():
            for start in range(0, len(record_ids), 500):  # under the host-parameter limit
                chunk = record_ids[start : start + 500]
                rows = self._conn.execute(
                    records_query(len(chunk)), [collection, *chunk]
                ).fetchall()
                for row in rows:
                    state = record_from_row(row)
                    found[(state.collection, state.record_id)] = state
        return found

    def load_record_operations(self, key: RecordKey) -> list[Operation]:
        rows = self._conn.execute(
            f"SELECT {OPERATION_SELECT} FROM kora_operations "
            "WHERE collection = ? AND record_id = ?",
            key,
        ).fetchall()
        return [operation_from_row(row) for row in rows]


@attrs.define(eq=False)
class _QueuedAppend:
    """One ``append_batch`` call waiting for (or in) a group commit."""

    ops: tuple[Operation, ...]
    admit: Admit | None
    received_at: int
    plan: AppendPlan | None = None
    error: Exception | None = None


def _append_group(conn: sqlite3.Connection, group: Sequence[_QueuedAppend]) -> list[AppendPlan]:
    """Plan and write each batch in order, all in one transaction."""

    def work() -> list[AppendPlan]:
        reader = _SqliteReader(conn)
        plans = []
        for queued in group:
            plan = plan_append(reader, queued.ops, queued.admit)
            if plan.applied:
                _write_plan(conn, plan, queued.received_at)
            plans.append(plan)
        return plans

    return _write_transaction(conn, work)


def _write_plan(conn: sqlite3.Connection, plan: AppendPlan, received_at: int) -> None:
    conn.executemany(_INSERT_OPERATION, plan.operation_rows(received_at))
    conn.executemany(_UPSERT_VERSION, list(plan.version_vector.items()))
    conn.executemany(_UPSERT_RECORD, list(plan.record_rows.values()))
    conn.execute(
        "UPDATE kora_delivery_counter SET value = ? WHERE id = 1", (plan.max_delivery_sequence,)
    )


@asynccontextmanager
async def open_sqlite_server_store(
    path: str | Path, *, node_id: str | None = None
) -> AsyncIterator[SqliteServerStore]:
    """``async with open_sqlite_server_store("server.db") as store``."""
    async with SqliteServerStore(path, node_id=node_id) as store:
        yield store
