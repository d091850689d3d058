"""Initial sync benchmark: ``SQLiteStore.apply_remote`` beside raw sqlite3 writing the same rows.

Run: ``.venv/bin/python -m bench.apply_remote_bench`` (under a minute).

Scenario ``apply_remote_100k``: a fresh client store receives 100,000 remote inserts made by a
few nodes (interleaved in HLC order, as a server delivers them), in batches of 5,000, each
applied with ``apply_remote(batch, watermark=("", n))`` as the sync engine does: one durable
transaction per batch.  Operations are built before the clock starts (decoding the wire is
not measured here).

Beside it, in the same run, plain ``sqlite3`` with the store's schema and pragmas (WAL,
``synchronous=FULL``, the same page cache) writes the rows the store persists for the same
operations, in the same transactions: the op log, the records, the version vector, the HLC
and the delivery watermark.  ``sqlite3`` (the floor) includes encoding each operation's JSON
columns, which any client storing them must do; ``sqlite3_sql_only`` has them prebuilt.

Prints one JSON object per line ``{"scenario","system","metric","value","unit"}``, then the
ratio kora / floor.  ``KORA_BENCH_OPS``, ``KORA_BENCH_BATCH``, ``KORA_BENCH_NODES`` and
``KORA_BENCH_REPEAT`` (runs, median taken) change the scenario.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation, OpType
from kora.store import open_sqlite_store
from kora.store._fast_ops import build_operation, encode_sorted
from kora.store._sqlite_schema import migrate

OPS = int(os.environ.get("KORA_BENCH_OPS", "100000"))
BATCH = int(os.environ.get("KORA_BENCH_BATCH", "5000"))
NODES = int(os.environ.get("KORA_BENCH_NODES", "4"))
REPEAT = int(os.environ.get("KORA_BENCH_REPEAT", "3"))
SCENARIO = f"apply_remote_{OPS // 1000}k"
BASE_WALL_TIME = 1_795_768_501_219
CLIENT = "0190f000-0000-7000-8000-00000000c11e"

results: list[dict[str, Any]] = []


def emit(system: str, metric: str, value: float, unit: str) -> None:
    row = {"scenario": SCENARIO, "system": system, "metric": metric, "value": round(value, 3),
           "unit": unit}  # fmt: skip
    results.append(row)
    print(json.dumps(row), flush=True)


def _uuid7(rng: random.Random, ms: int) -> str:
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    value |= rng.getrandbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def remote_inserts(count: int, nodes: int, *, seed: int = 11) -> list[Operation]:
    """``count`` inserts by ``nodes`` nodes, in HLC order; each op depends on its node's
    previous one, as a client's operations of one collection do."""
    rng = random.Random(seed)
    node_ids = sorted(_uuid7(rng, BASE_WALL_TIME - 86_400_000 + n) for n in range(nodes))
    seqs = dict.fromkeys(node_ids, 0)
    last: dict[str, str] = {}
    ops: list[Operation] = []
    for index in range(count):
        node = node_ids[rng.randrange(nodes)]
        wall = BASE_WALL_TIME + index // 4  # a few operations per millisecond
        seqs[node] += 1
        op, _, _ = build_operation(
            node_id=node, op_type=OpType.INSERT, collection="todos",
            record_id=_uuid7(rng, wall),
            data={"title": f"todo {index}", "done": index % 3 == 0, "priority": index % 7},
            previous_data=None, timestamp=HLCTimestamp(wall, index % 4, node),
            sequence_number=seqs[node], causal_deps=(last[node],) if node in last else (),
            schema_version=1, atomic_ops=None, transaction_id=None, mutation_name=None,
        )  # fmt: skip
        last[node] = op.id
        ops.append(op)
    return ops


def batches(ops: list[Operation]) -> list[list[Operation]]:
    return [ops[start : start + BATCH] for start in range(0, len(ops), BATCH)]


# ------------------------------------------------------------------------- raw sqlite3


def _dumps(value: object) -> str:
    # The store's encoder: the C json encoder, prebuilt, keys sorted, compact.
    return encode_sorted(value)


def raw_rows(batch: list[Operation]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The op log and record rows ``SQLiteStore`` writes for a batch of fresh inserts."""
    ops, records = [], []
    for op in batch:
        ts = op.timestamp
        stamp = f"{ts.wall_time:015d}:{ts.logical:05d}:{ts.node_id}"
        data = _dumps(op.data)
        ops.append((op.id, op.node_id, op.sequence_number, "insert", op.collection,
                    op.record_id, stamp, data, None, None, _dumps(list(op.causal_deps)),
                    op.schema_version, None, None))  # fmt: skip
        records.append((op.collection, op.record_id, data, stamp, op.id))
    return ops, records


class RawClient:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA cache_size = -32768")  # as SQLiteStore
        self.conn.execute("BEGIN IMMEDIATE")
        migrate(self.conn)
        self.conn.execute("COMMIT")
        self.vv: dict[str, int] = {}
        self.applied = 0

    def write(self, batch: list[Operation], rows: tuple[list[Any], list[Any]] | None) -> None:
        ops, records = raw_rows(batch) if rows is None else rows
        for op in batch:
            self.vv[op.node_id] = max(self.vv.get(op.node_id, 0), op.sequence_number)
        self.applied += len(batch)
        last = batch[-1].timestamp
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO ops (id, node_id, sequence_number, type, collection, record_id, hlc, "
            "data, previous_data, atomic_ops, causal_deps, schema_version, transaction_id, "
            "mutation_name) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ops,
        )
        conn.executemany(  # as SQLiteStore binds a new record's row
            "INSERT INTO records (collection, id, data, field_versions, field_atomic, deleted, "
            "version, created_version, last_op_id) VALUES (?1, ?2, ?3, '{}', '{}', 0, ?4, ?4, ?5)",
            records,
        )
        conn.executemany(
            "INSERT INTO version_vector (node_id, sequence) VALUES (?, ?) ON CONFLICT (node_id) "
            "DO UPDATE SET sequence = max(sequence, excluded.sequence)",
            list(self.vv.items()),
        )
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('hlc', ?)",
            (f"{last.wall_time:015d}:{last.logical + 1:05d}:{CLIENT}",),
        )
        conn.execute(
            "INSERT INTO watermarks (view, value, touched) VALUES ('', ?, 1) "
            "ON CONFLICT (view) DO UPDATE SET value = excluded.value",
            (self.applied,),
        )
        conn.execute("COMMIT")


def raw_run(directory: Path, name: str, chunks: list[list[Operation]], prebuilt: bool) -> float:
    raw = RawClient(str(directory / name))
    rows = [raw_rows(chunk) for chunk in chunks] if prebuilt else [None] * len(chunks)
    start = time.perf_counter()
    for chunk, chunk_rows in zip(chunks, rows, strict=True):
        raw.write(chunk, chunk_rows)
    elapsed = time.perf_counter() - start
    raw.conn.close()
    _remove(directory, name)
    return elapsed


# ------------------------------------------------------------------------------- kora


def _remove(directory: Path, name: str) -> None:
    # A finished run's files go at once: their dirty pages would slow the next run's fsyncs.
    for suffix in ("", "-wal", "-shm"):
        (directory / f"{name}{suffix}").unlink(missing_ok=True)


async def kora_run(directory: Path, name: str, chunks: list[list[Operation]]) -> float:
    async with open_sqlite_store(
        str(directory / name), node_id=CLIENT, physical_clock=lambda: BASE_WALL_TIME + 60_000
    ) as store:
        applied = 0
        start = time.perf_counter()
        for chunk in chunks:
            applied += len(chunk)
            result = await store.apply_remote(chunk, watermark=("", applied))
            assert len(result.applied) == len(chunk), result.rejected[:1]
        elapsed = time.perf_counter() - start
        assert await store.count("todos") == applied
    _remove(directory, name)
    return elapsed


async def main() -> None:
    ops = remote_inserts(OPS, NODES)
    chunks = batches(ops)
    timings: dict[str, list[float]] = {"kora": [], "sqlite3": [], "sqlite3_sql_only": []}
    with tempfile.TemporaryDirectory(prefix="kora-bench-") as name:
        directory = Path(name)
        for run in range(REPEAT):
            timings["kora"].append(await kora_run(directory, f"kora-{run}.db", chunks))
            timings["sqlite3"].append(raw_run(directory, f"raw-{run}.db", chunks, False))
            timings["sqlite3_sql_only"].append(raw_run(directory, f"sql-{run}.db", chunks, True))
    for system, values in timings.items():
        emit(system, "seconds", statistics.median(values), "s")
        emit(system, "best_seconds", min(values), "s")
        emit(system, "ops_per_s", OPS / statistics.median(values), "ops/s")
    floor = statistics.median(timings["sqlite3"])
    kora = statistics.median(timings["kora"])
    runs = "; ".join(f"{name} " + " ".join(f"{v:.2f}" for v in values)
                     for name, values in timings.items())  # fmt: skip
    print(f"\n{SCENARIO}: kora {kora:.2f} s, raw sqlite3 floor {floor:.2f} s, "
          f"kora/floor {kora / floor:.2f} (load average {os.getloadavg()[0]:.2f}; runs: {runs})")  # fmt: skip


if __name__ == "__main__":
    print(f"# python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} cpus, {OPS} ops from {NODES} nodes in batches of {BATCH}",
          flush=True)  # fmt: skip
    trio.run(main)
