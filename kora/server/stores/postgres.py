"""``PostgresServerStore``: one operation log shared by several server processes.

psycopg 3's async API runs on asyncio, not trio, so this store uses *synchronous* psycopg
connections from worker threads, like the SQLite store: a writer connection and a reader
connection, each used one job at a time behind its own ``CapacityLimiter(1)``, so reads never
queue behind an append.

Total delivery order across processes: an append transaction first locks the single row of
``kora_delivery_counter`` (``SELECT ... FOR UPDATE``).  Appends therefore run one after the
other across all processes, each sees every earlier commit (READ COMMITTED), dedups against
it and numbers its operations right after the previous commit's.  Delivery order is commit
order, with no gaps (a concurrent duplicate waits for the lock and is then seen as a
duplicate, so unlike the reference it burns no sequence).  PostgreSQL makes a commit visible
before it releases the lock, so readers always see a prefix ``1..max`` of the log.

Waking other processes: the append transaction ends with ``pg_notify(channel, max)``, which
PostgreSQL delivers to listeners only after the commit, in commit order.  Each store runs a
listener thread with its own connection that ``LISTEN``s on the channel and advances this
process's ``CommitSignal`` (``wait_for_new``).  When that connection drops, the thread
reconnects with backoff and re-reads the counter, so a lost notification only delays a wake-up.

Identifier columns use ``COLLATE "C"``: byte order compares fastest and does not depend on
the database's locale (the reference's ordering hazard, spec 8.8).

Durability follows the server's ``synchronous_commit`` (keep it ``on``, reliability 2.2).
Tables live in the connection's default schema, or in ``schema=`` (created if missing), which
tests use to get fresh tables per test.  Schema setup runs under ``pg_advisory_xact_lock`` so
that processes starting together do not race on ``CREATE TABLE``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import psycopg
import trio
from psycopg import sql

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
from kora.server.stores.base import (
    Admit,
    AppendResult,
    DeliveredOperation,
    ServerStore,
    ServerStoreError,
)

__all__ = ["PostgresServerStore", "open_postgres_server_store"]

T = TypeVar("T")

#: Seconds to wait for a connection to the database.
CONNECT_TIMEOUT_SECONDS: Final = 10
#: How long closing may take when the caller is being cancelled.
CLOSE_TIMEOUT_SECONDS: Final = 5.0
#: The listener's reconnect backoff: first delay, cap.
LISTEN_RETRY_SECONDS: Final = (0.1, 5.0)
#: Key of the advisory lock held while creating tables (any constant works; this is "kora").
_SCHEMA_LOCK_KEY: Final = 0x6B6F7261
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,39}")

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS kora_operations (
        id TEXT COLLATE "C" PRIMARY KEY,
        delivery_seq BIGINT NOT NULL UNIQUE,
        node_id TEXT COLLATE "C" NOT NULL,
        type TEXT NOT NULL,
        collection TEXT COLLATE "C" NOT NULL,
        record_id TEXT COLLATE "C" NOT NULL,
        data TEXT,
        previous_data TEXT,
        atomic_ops TEXT,
        wall_time BIGINT NOT NULL,
        logical INTEGER NOT NULL,
        timestamp_node_id TEXT COLLATE "C" NOT NULL,
        sequence_number BIGINT NOT NULL,
        causal_deps TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        transaction_id TEXT,
        mutation_name TEXT,
        received_at BIGINT NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS kora_operations_node_seq
        ON kora_operations (node_id, sequence_number)""",
    """CREATE INDEX IF NOT EXISTS kora_operations_record
        ON kora_operations (collection, record_id)""",
    """CREATE TABLE IF NOT EXISTS kora_records (
        collection TEXT COLLATE "C" NOT NULL,
        record_id TEXT COLLATE "C" NOT NULL,
        fields TEXT NOT NULL,
        field_versions TEXT NOT NULL,
        field_atomic TEXT NOT NULL,
        deleted BOOLEAN NOT NULL,
        version TEXT NOT NULL,
        created_version TEXT NOT NULL,
        last_op_id TEXT NOT NULL,
        PRIMARY KEY (collection, record_id)
    )""",
    """CREATE TABLE IF NOT EXISTS kora_version_vector (
        node_id TEXT COLLATE "C" PRIMARY KEY,
        max_sequence_number BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kora_delivery_counter (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value BIGINT NOT NULL
    )""",
    "INSERT INTO kora_delivery_counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    """CREATE TABLE IF NOT EXISTS kora_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
)

_INSERT_OPERATION: Final = (
    f"INSERT INTO kora_operations ({', '.join(OPERATION_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in OPERATION_COLUMNS)})"
)
_UPSERT_RECORD: Final = (
    f"INSERT INTO kora_records ({', '.join(RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in RECORD_COLUMNS)}) "
    "ON CONFLICT (collection, record_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in RECORD_COLUMNS[2:])
)
_UPSERT_VERSION: Final = (
    "INSERT INTO kora_version_vector (node_id, max_sequence_number) VALUES (%s, %s) "
    "ON CONFLICT (node_id) DO UPDATE SET max_sequence_number = "
    "GREATEST(kora_version_vector.max_sequence_number, EXCLUDED.max_sequence_number)"
)
_SELECT_COUNTER: Final = "SELECT value FROM kora_delivery_counter WHERE id = 1"


class PostgresServerStore(ServerStore):
    """The server store in a PostgreSQL database, shareable by several processes.

    Args:
        dsn: A libpq connection string or URL, e.g. ``"postgresql://user@host:5432/db"``.
        schema: Keep the tables in this schema (created if missing; lowercase letters,
            digits and ``_``, at most 40 characters).  ``None``: the connection's default
            ``search_path`` (normally ``public``).
        node_id: The server's node id for a new database; an existing database keeps the one
            it was created with (a fresh UUIDv7 if omitted).
    """

    def __init__(self, dsn: str, *, schema: str | None = None, node_id: str | None = None) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"invalid schema name {schema!r}: use [a-z_][a-z0-9_]{{0,39}}")
        self._dsn = dsn
        self._schema = schema
        self._channel = "kora_delivery" if schema is None else f"kora_delivery_{schema}"
        self._requested_node_id = node_id
        self._node_id: str | None = None
        self._writer = _Connection(dsn, schema, "writer")
        self._reader = _Connection(dsn, schema, "reader")
        self._listener: _Listener | None = None
        self._signal = CommitSignal()
        self._opened = False
        self._closed = False

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            raise ClosedError("the server store is not open")
        return self._node_id

    @property
    def schema(self) -> str | None:
        return self._schema

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel carrying new maximum delivery sequences."""
        return self._channel

    def queue_depth(self) -> int:
        """How many jobs wait for the writer or reader connection (for diagnostics)."""
        return self._writer.queue_depth() + self._reader.queue_depth()

    async def open(self) -> None:
        if self._closed:
            raise ClosedError("the server store is closed")
        if self._opened:
            return
        self._opened = True
        candidate = self._requested_node_id or uuid7()
        try:
            self._node_id, known = await self._writer.run(
                lambda conn: _create_schema(conn, self._schema, candidate)
            )
            self._signal.advance(known)
            listener = _Listener(
                self._dsn, self._schema, self._channel, trio.lowlevel.current_trio_token()
            )
            listener.start(self._signal)
            self._listener = listener
            # Listen before returning, so no commit after open() can go unnoticed.
            first_error = await trio.to_thread.run_sync(listener.wait_ready)
            if first_error is not None:
                raise ServerStoreError(
                    f"PostgreSQL server store (listener): {first_error}"
                ) from first_error
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._signal.close()
        listener, self._listener = self._listener, None
        # Shielded so that the connections are closed when our caller is being cancelled.
        with trio.move_on_after(CLOSE_TIMEOUT_SECONDS, shield=True):
            if listener is not None:
                listener.stop()
                await trio.to_thread.run_sync(listener.join)
            await self._writer.close()
            await self._reader.close()

    def _check_open(self) -> None:
        if self._closed or not self._opened:
            raise ClosedError("the server store is closed" if self._closed else "not open")

    async def append_batch(
        self, ops: Sequence[Operation], *, admit: Admit | None = None
    ) -> AppendResult:
        self._check_open()
        received_at = int(time.time() * 1000)
        plan = await self._writer.run(
            lambda conn: _append(conn, self._channel, ops, admit, received_at)
        )
        self._signal.advance(plan.max_delivery_sequence)
        return AppendResult(plan.outcomes, plan.max_delivery_sequence)

    async def max_delivery_sequence(self) -> int:
        self._check_open()
        return await self._reader.run(_max_delivery_sequence)

    async def operations_after_delivery(self, after: int, limit: int) -> list[DeliveredOperation]:
        self._check_open()

        def job(conn: psycopg.Connection[Any]) -> list[DeliveredOperation]:
            rows = conn.execute(
                f"SELECT {OPERATION_SELECT} FROM kora_operations "
                "WHERE delivery_seq > %s ORDER BY delivery_seq LIMIT %s",
                (after, max(limit, 0)),
            ).fetchall()
            return [
                DeliveredOperation(operation_from_row(row), delivery_sequence_of_row(row))
                for row in rows
            ]

        return await self._reader.run(job)

    async def version_vector(self) -> VersionVector:
        self._check_open()

        def job(conn: psycopg.Connection[Any]) -> VersionVector:
            rows = conn.execute(
                "SELECT node_id, max_sequence_number FROM kora_version_vector"
            ).fetchall()
            return VersionVector({node: int(sequence) for node, sequence in rows})

        return await self._reader.run(job)

    async def operations_in_range(
        self, node_id: str, from_seq: int, to_seq: int
    ) -> list[Operation]:
        self._check_open()

        def job(conn: psycopg.Connection[Any]) -> list[Operation]:
            rows = conn.execute(
                f"SELECT {OPERATION_SELECT} FROM kora_operations "
                "WHERE node_id = %s AND sequence_number BETWEEN %s AND %s "
                "ORDER BY sequence_number, delivery_seq",
                (node_id, from_seq, to_seq),
            ).fetchall()
            return [operation_from_row(row) for row in rows]

        return await self._reader.run(job)

    async def find_record(
        self, collection: str, record_id: str, *, include_deleted: bool = True
    ) -> RecordState | None:
        self._check_open()
        state = await self._reader.run(lambda conn: _load_record(conn, (collection, record_id)))
        if state is None or (state.deleted and not include_deleted):
            return None
        return state

    async def operation_count(self) -> int:
        self._check_open()

        def job(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT count(*) FROM kora_operations").fetchone()
            assert row is not None
            return int(row[0])

        return await self._reader.run(job)

    async def wait_for_new(self, after: int) -> int:
        self._check_open()
        return await self._signal.wait_above(after)


class _Connection:
    """One psycopg connection used from worker threads, one job at a time, reconnecting."""

    def __init__(self, dsn: str, schema: str | None, role: str) -> None:
        self._dsn = dsn
        self._schema = schema
        self._role = role
        self._conn: psycopg.Connection[Any] | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False

    def queue_depth(self) -> int:
        return self._limiter.statistics().tasks_waiting

    async def run(self, job: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            return await trio.to_thread.run_sync(
                self._run_sync, job, limiter=self._limiter, thread_name=f"kora-pg-{self._role}"
            )
        except psycopg.Error as exc:
            raise ServerStoreError(f"PostgreSQL server store ({self._role}): {exc}") from exc

    def _run_sync(self, job: Callable[[psycopg.Connection[Any]], T]) -> T:
        if self._closed:
            raise ClosedError("the server store is closed")
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = conn = _connect(self._dsn, self._schema, self._role)
        return job(conn)

    async def close(self) -> None:
        await trio.to_thread.run_sync(self._close_sync, limiter=self._limiter)

    def _close_sync(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def application_name(role: str, schema: str | None) -> str:
    """What ``pg_stat_activity`` shows for a connection of this store."""
    return (f"kora-{role}" if schema is None else f"kora-{role}-{schema}")[:63]


def _connect(dsn: str, schema: str | None, role: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        application_name=application_name(role, schema),
    )
    if schema is not None:
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        except BaseException:
            conn.close()
            raise
    return conn


def _create_schema(
    conn: psycopg.Connection[Any], schema: str | None, candidate_node_id: str
) -> tuple[str, int]:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        if schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for statement in _DDL:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO kora_meta (key, value) VALUES ('node_id', %s) ON CONFLICT (key) DO NOTHING",
            (candidate_node_id,),
        )
        row = conn.execute("SELECT value FROM kora_meta WHERE key = 'node_id'").fetchone()
        assert row is not None
        return str(row[0]), _max_delivery_sequence(conn)


def _max_delivery_sequence(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_SELECT_COUNTER).fetchone()
    assert row is not None
    return int(row[0])


def _load_record(conn: psycopg.Connection[Any], key: RecordKey) -> RecordState | None:
    row = conn.execute(
        f"SELECT {RECORD_SELECT} FROM kora_records WHERE collection = %s AND record_id = %s", key
    ).fetchone()
    return None if row is None else record_from_row(row)


class _PostgresReader:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        rows = self._conn.execute(
            # A join, not "id = ANY(%s)": once psycopg prepares the statement, PostgreSQL's
            # generic plan compares every row with every id instead of probing the index.
            "SELECT o.id FROM unnest(%s::text[]) AS wanted(id) "
            "JOIN kora_operations AS o ON o.id = wanted.id",
            (list(ids),),
        ).fetchall()
        return {row[0] for row in rows}

    def current_max_delivery_sequence(self) -> int:
        # The row lock is held until commit: this is what serializes appends across processes.
        row = self._conn.execute(_SELECT_COUNTER + " FOR UPDATE").fetchone()
        assert row is not None
        return int(row[0])

    def load_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, RecordState]:
        rows = self._conn.execute(
            f"SELECT {RECORD_SELECT} FROM kora_records "
            "WHERE (collection, record_id) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([key[0] for key in keys], [key[1] for key in keys]),
        ).fetchall()
        found: dict[RecordKey, RecordState] = {}
        for row in rows:
            state = record_from_row(row)
            found[(state.collection, state.record_id)] = state
        return found

    def load_record_operations(self, key: RecordKey) -> list[Operation]:
        rows = self._conn.execute(
            f"SELECT {OPERATION_SELECT} FROM kora_operations "
            "WHERE collection = %s AND record_id = %s",
            key,
        ).fetchall()
        return [operation_from_row(row) for row in rows]


def _append(
    conn: psycopg.Connection[Any],
    channel: str,
    ops: Sequence[Operation],
    admit: Admit | None,
    received_at: int,
) -> AppendPlan:
    with conn.transaction():
        reader = _PostgresReader(conn)
        # Lock the counter before the dedup read, so the read sees every earlier commit.
        reader.current_max_delivery_sequence()
        plan = plan_append(reader, ops, admit)
        if plan.applied:
            with conn.cursor() as cursor:
                cursor.executemany(_INSERT_OPERATION, plan.operation_rows(received_at))
                cursor.executemany(_UPSERT_VERSION, list(plan.version_vector.items()))
                cursor.executemany(_UPSERT_RECORD, list(plan.record_rows.values()))
            conn.execute(
                "UPDATE kora_delivery_counter SET value = %s WHERE id = 1",
                (plan.max_delivery_sequence,),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (channel, str(plan.max_delivery_sequence)))
    return plan


class _Listener:
    """A thread with its own connection that LISTENs and feeds the ``CommitSignal``.

    It waits with ``select`` on the connection's socket and on a pipe, so ``stop`` wakes it
    at once instead of after a polling timeout.
    """

    def __init__(
        self, dsn: str, schema: str | None, channel: str, trio_token: trio.lowlevel.TrioToken
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._channel = channel
        self._trio_token = trio_token
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._first_error: psycopg.Error | None = None
        self._wake_read, self._wake_write = os.pipe()
        self._thread: threading.Thread | None = None
        self._signal: CommitSignal | None = None

    def start(self, signal: CommitSignal) -> None:
        self._signal = signal
        self._thread = threading.Thread(
            target=self._main, name=f"kora-pg-listen-{self._channel}", daemon=True
        )
        self._thread.start()

    def wait_ready(self) -> psycopg.Error | None:
        """Block until the first LISTEN is in place; return the error if it failed.

        After a failure the thread keeps retrying in the background until ``stop``.
        """
        self._ready.wait()
        return self._first_error

    def stop(self) -> None:
        """Ask the thread to exit (idempotent; call ``join`` once afterwards)."""
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def join(self) -> None:
        """Wait for the thread to exit after ``stop``, then release the wake-up pipe."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _report(self, delivery_sequence: int) -> None:
        signal = self._signal
        assert signal is not None
        try:
            self._trio_token.run_sync_soon(signal.advance, delivery_sequence)
        except trio.RunFinishedError:
            self._stop.set()

    def _main(self) -> None:
        delay, cap = LISTEN_RETRY_SECONDS
        try:
            while not self._stop.is_set():
                try:
                    self._listen_until_stopped_or_broken()
                    delay = LISTEN_RETRY_SECONDS[0]
                except psycopg.Error as exc:
                    if not self._ready.is_set():
                        self._first_error = exc
                        self._ready.set()
                    self._stop.wait(delay)
                    delay = min(delay * 2, cap)
        finally:
            self._ready.set()

    def _listen_until_stopped_or_broken(self) -> None:
        with _connect(self._dsn, self._schema, "listener") as conn:
            highest = 0

            def on_notify(notify: psycopg.Notify) -> None:
                nonlocal highest
                with contextlib.suppress(ValueError):
                    highest = max(highest, int(notify.payload))

            conn.add_notify_handler(on_notify)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            # Commits between the last notification we saw and this LISTEN are caught here.
            highest = max(highest, _max_delivery_sequence(conn))
            self._ready.set()
            pgconn = conn.pgconn
            while not self._stop.is_set():
                if highest:
                    self._report(highest)
                    highest = 0
                readable, _, _ = select.select([pgconn.socket, self._wake_read], [], [])
                if self._wake_read in readable:
                    return
                pgconn.consume_input()
                while (notify := pgconn.notifies()) is not None:
                    assert pgconn.notify_handler is not None
                    pgconn.notify_handler(notify)


@asynccontextmanager
async def open_postgres_server_store(
    dsn: str, *, schema: str | None = None, node_id: str | None = None
) -> AsyncIterator[PostgresServerStore]:
    """``async with open_postgres_server_store("postgresql://...") as store``."""
    async with PostgresServerStore(dsn, schema=schema, node_id=node_id) as store:
        yield store
