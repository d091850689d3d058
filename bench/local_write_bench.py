"""Local store benchmark: kora's SQLiteStore beside raw sqlite3 doing the same rows.

Run: ``.venv/bin/python -m bench.local_write_bench`` (about a minute).

Scenarios, each measured for ``SQLiteStore`` and for plain ``sqlite3`` writing the same rows
into the same schema with the same pragmas (WAL, synchronous=FULL) in the same run:

* ``single_write``: one local insert per transaction (each one durable), ops/s;
* ``batch_1000``: 1,000 local inserts in one transaction, ops/s (median of the rounds);
* ``batch_1000_named``: the same with record ids given, as ``kora.app`` writes (its raw
  figures are ``batch_1000``'s: the rows are the same);
* ``query_100k``: equality filter + order_by + limit 20 on 100,000 records, median ms.

Prints one JSON object per line ``{"scenario","system","metric","value","unit"}``, then a
table with the ratio kora / raw.  Raw sqlite3 skips what kora adds on top of the rows: the
HLC, content ids, merge, the thread hop and building ``Operation``/``Record`` values.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from kora.core.ids import uuid7
from kora.store import LocalMutation, SQLiteStore, open_sqlite_store
from kora.store._sqlite_schema import migrate

SINGLE_WRITES = int(os.environ.get("KORA_BENCH_SINGLE", "300"))
BATCH_ROUNDS = int(os.environ.get("KORA_BENCH_ROUNDS", "9"))
RECORDS = int(os.environ.get("KORA_BENCH_RECORDS", "100000"))
QUERIES = 200
NODE = "0190f000-0000-7000-8000-000000000001"

results: list[dict[str, Any]] = []


def emit(scenario: str, system: str, metric: str, value: float, unit: str) -> None:
    row = {"scenario": scenario, "system": system, "metric": metric, "value": round(value, 3),
           "unit": unit}  # fmt: skip
    results.append(row)
    print(json.dumps(row), flush=True)


def todo(index: int) -> dict[str, Any]:
    return {"title": f"todo {index}", "done": index % 2 == 0, "priority": index % 7}


# ------------------------------------------------------------------------- raw sqlite3


class RawWriter:
    """The rows one local insert writes, without anything kora computes around them.

    The same rows as ``SQLiteStore`` (schema v2): the op log row with a UUIDv7-shaped record
    id, the previous operation as its causal dependency and the transaction id, the record,
    the queue entry; then the version vector and the clock once per transaction.
    """

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA cache_size = -32768")  # as SQLiteStore
        self.conn.execute("BEGIN IMMEDIATE")
        migrate(self.conn)
        self.conn.execute("COMMIT")
        self.seq = 0
        self.previous: str | None = None

    def rows(
        self, count: int, transaction_id: str | None
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        ops, records = [], []
        for _ in range(count):
            self.seq += 1
            op_id = hashlib.sha256(str(self.seq).encode()).hexdigest()
            stamp = f"{1_700_000_000_000 + self.seq:015d}:00000:{NODE}"
            record_id = f"0190f000-0000-7000-8000-{self.seq:012x}"
            data = json.dumps(todo(self.seq), separators=(",", ":"), sort_keys=True)
            deps = "[]" if self.previous is None else f'["{self.previous}"]'
            ops.append((op_id, self.seq, "todos", record_id, stamp, data, deps, transaction_id,
                        None))  # fmt: skip
            records.append(("todos", record_id, data, stamp, op_id))
            self.previous = op_id
        return ops, records

    def write(self, count: int, transaction_id: str | None = None) -> None:
        base = self.seq
        ops, records = self.rows(count, transaction_id)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        # As SQLiteStore binds them: what is the same for every row is written into the SQL.
        conn.executemany(
            "INSERT INTO ops (id, node_id, sequence_number, type, collection, record_id, hlc, "
            "data, previous_data, atomic_ops, causal_deps, schema_version, transaction_id, "
            f"mutation_name) VALUES (?1, '{NODE}', ?2, 'insert', ?3, ?4, ?5, ?6, NULL, NULL, "
            "?7, 1, ?8, ?9)",
            ops,
        )
        conn.executemany(
            "INSERT INTO records (collection, id, data, field_versions, field_atomic, deleted, "
            "version, created_version, last_op_id) VALUES (?1, ?2, ?3, '{}', '{}', 0, ?4, ?4, ?5)",
            records,
        )
        conn.execute(
            "INSERT INTO outbound (op_rowid) SELECT rowid FROM ops WHERE rowid > ?", (base,)
        )
        conn.execute(
            "INSERT INTO version_vector (node_id, sequence) VALUES (?, ?) ON CONFLICT (node_id) "
            "DO UPDATE SET sequence = max(sequence, excluded.sequence)",
            (NODE, self.seq),
        )
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('hlc', ?)", (ops[-1][4],))
        conn.execute("COMMIT")


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -------------------------------------------------------------------------- scenarios


async def single_writes(directory: Path) -> None:
    async with open_sqlite_store(str(directory / "single.db")) as store:
        await store.write_local(LocalMutation.insert("todos", todo(0)))  # warm up
        start = time.perf_counter()
        for index in range(SINGLE_WRITES):
            await store.write_local(LocalMutation.insert("todos", todo(index)))
        emit("single_write", "kora", "ops_per_s", SINGLE_WRITES / (time.perf_counter() - start),
             "ops/s")  # fmt: skip
    raw = RawWriter(str(directory / "single-raw.db"))
    raw.write(1)
    elapsed = timed(lambda: [raw.write(1) for _ in range(SINGLE_WRITES)] and None)
    emit("single_write", "sqlite3", "ops_per_s", SINGLE_WRITES / elapsed, "ops/s")
    raw.conn.close()


async def batches(directory: Path) -> None:
    kora_rates: list[float] = []
    named_rates: list[float] = []
    async with open_sqlite_store(str(directory / "batch.db")) as store:
        await store.write_local_many([LocalMutation.insert("todos", todo(i)) for i in range(100)])
        for _ in range(BATCH_ROUNDS):
            mutations = [LocalMutation.insert("todos", todo(i)) for i in range(1000)]
            start = time.perf_counter()
            await store.write_local_many(mutations, transaction_id="bench")
            kora_rates.append(1000 / (time.perf_counter() - start))
    # As kora.app writes: it names every record it inserts (a UUIDv7 of its own).
    async with open_sqlite_store(str(directory / "named.db")) as store:
        await store.write_local_many([LocalMutation.insert("todos", todo(i)) for i in range(100)])
        for _ in range(BATCH_ROUNDS):
            mutations = [
                LocalMutation.insert("todos", todo(i), record_id=uuid7()) for i in range(1000)
            ]
            start = time.perf_counter()
            await store.write_local_many(mutations, transaction_id="bench")
            named_rates.append(1000 / (time.perf_counter() - start))
    raw = RawWriter(str(directory / "batch-raw.db"))
    raw.write(100)
    raw_rates = [1000 / timed(lambda: raw.write(1000, "bench")) for _ in range(BATCH_ROUNDS)]
    raw.conn.close()
    for system, rates in (("kora", kora_rates), ("sqlite3", raw_rates)):
        emit("batch_1000", system, "ops_per_s", statistics.median(rates), "ops/s")
        emit("batch_1000", system, "best_ops_per_s", max(rates), "ops/s")
    # The rows are the same whoever picks the record ids: the same raw figures apply.
    emit("batch_1000_named", "kora", "ops_per_s", statistics.median(named_rates), "ops/s")
    emit("batch_1000_named", "kora", "best_ops_per_s", max(named_rates), "ops/s")
    emit("batch_1000_named", "sqlite3", "ops_per_s", statistics.median(raw_rates), "ops/s")
    emit("batch_1000_named", "sqlite3", "best_ops_per_s", max(raw_rates), "ops/s")


async def queries(directory: Path) -> None:
    path = str(directory / "query.db")
    async with open_sqlite_store(path) as store:
        assert isinstance(store, SQLiteStore)
        for start in range(0, RECORDS, 5000):
            await store.write_local_many(
                [LocalMutation.insert("todos", todo(i)) for i in range(start, start + 5000)]
            )
        where = [("priority", "==", 3), ("done", "==", False)]
        order = [("title", True)]
        first = time.perf_counter()
        rows = await store.query("todos", where, order, limit=20)
        emit("query_100k", "kora", "first_query_builds_index_ms",
             1000 * (time.perf_counter() - first), "ms")  # fmt: skip
        assert len(rows) == 20
        latencies = []
        for index in range(QUERIES):
            start = time.perf_counter()
            await store.query("todos", [("priority", "==", index % 7), ("done", "==", False)],
                              order, limit=20)  # fmt: skip
            latencies.append(1000 * (time.perf_counter() - start))
        emit("query_100k", "kora", "median_ms", statistics.median(latencies), "ms")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -32768")
    sql = (
        "SELECT collection, id, data, field_versions, deleted, version, created_version "
        "FROM records WHERE collection = ? AND deleted = 0 "
        "AND json_extract(data, '$.\"priority\"') IS ? AND json_extract(data, '$.\"done\"') IS ? "
        "ORDER BY json_extract(data, '$.\"title\"') DESC, id ASC LIMIT 20"
    )
    latencies = []
    for index in range(QUERIES):
        start = time.perf_counter()
        conn.execute(sql, ("todos", index % 7, 0)).fetchall()
        latencies.append(1000 * (time.perf_counter() - start))
    conn.close()
    emit("query_100k", "sqlite3", "median_ms", statistics.median(latencies), "ms")


def table() -> None:
    print()
    print(f"{'scenario':<17} {'metric':<28} {'kora':>12} {'sqlite3':>12} {'kora/raw':>9}")
    by_key = {(r["scenario"], r["metric"], r["system"]): r for r in results}
    for (scenario, metric, system), row in by_key.items():
        if system != "kora":
            continue
        raw = by_key.get((scenario, metric, "sqlite3"))
        raw_text = f"{raw['value']:>12,.2f}" if raw else f"{'-':>12}"
        ratio = f"{row['value'] / raw['value']:>9.2f}" if raw and raw["value"] else f"{'-':>9}"
        print(f"{scenario:<17} {metric:<28} {row['value']:>12,.2f} {raw_text} {ratio}")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kora-bench-") as name:
        directory = Path(name)
        await single_writes(directory)
        await batches(directory)
        await queries(directory)
    table()


if __name__ == "__main__":
    print(f"# python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} cpus", flush=True)  # fmt: skip
    trio.run(main)
