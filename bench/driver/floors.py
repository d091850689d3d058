"""The machine's floors: a bare WebSocket relay and raw sqlite3, measured in the same run.

* Relay (server in a child process, ``bench.driver.relay``): latency of one small message
  A -> relay -> B, the rate at which B gets a stream of them, and one message reaching many
  receivers.  No decoding, no storage: what any WebSocket sync server here pays at least.
* sqlite3 with the client store's schema and pragmas (WAL, ``synchronous=FULL``): the time
  of one durable commit (every local write and every applied batch pays one), and the time
  to write the rows a client persists when it applies K remote operations (ops, records,
  version vector, delivery watermark) with nothing computed around them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel
from trio_websocket import WebSocketConnection, open_websocket_url

from bench.driver.relay import commit_message, open_durable_log
from bench.driver.report import FLOOR, Report, percentile
from kora.store._sqlite_schema import migrate

_NODE = "0190f000-0000-7000-8000-000000000001"
_SMALL = '{"k":12345}'  # about the size of one small update's payload


async def relay_latency(url: str, count: int, warmup: int) -> list[float]:
    async with open_websocket_url(url) as a, open_websocket_url(url) as b:
        await _connected(a, b)
        samples: list[float] = []
        for index in range(warmup + count):
            start = time.perf_counter()
            await a.send_message(_SMALL)
            await b.get_message()
            if index >= warmup:
                samples.append(time.perf_counter() - start)
        return samples


async def durable_relay_latency(url: str, directory: Path, count: int, warmup: int) -> list[float]:
    """A -> relay -> B with the three durable commits our path makes: A commits the update to
    its own SQLite file before sending it, the relay (started with ``--durable``) commits it
    before forwarding it, B commits it before the sample ends."""
    writer_log = open_durable_log(str(directory / "durable-relay-a.db"))
    reader_log = open_durable_log(str(directory / "durable-relay-b.db"))
    try:
        async with open_websocket_url(url) as a, open_websocket_url(url) as b:
            await _connected(a, b)
            samples: list[float] = []
            for index in range(warmup + count):
                start = time.perf_counter()
                commit_message(writer_log, _SMALL)
                await a.send_message(_SMALL)
                commit_message(reader_log, await b.get_message())
                if index >= warmup:
                    samples.append(time.perf_counter() - start)
            return samples
    finally:
        writer_log.close()
        reader_log.close()


async def durable_pipeline_throughput(
    url: str, directory: Path, count: int, per_tx: int, batch: int = 100
) -> float:
    """Seconds until B has ``count`` operations through three durable SQLite stores: A commits
    the rows of ``per_tx`` operations (content ids hashed, the client store's schema) in one
    transaction and sends them as JSON arrays of ``batch``; the ``--durable`` relay commits a
    row per operation before forwarding; B parses each array and commits its rows.  Our
    throughput scenario's shape with nothing but sqlite3, json and trio-websocket."""
    writer = RawClientRows(directory / "pipeline-a.db")
    reader = RawClientRows(directory / "pipeline-b.db")

    async def send(a: WebSocketConnection) -> None:
        for first in range(0, count, per_tx):
            operations = writer.commit(min(per_tx, count - first))
            for offset in range(0, len(operations), batch):
                chunk = operations[offset : offset + batch]
                await a.send_message(json.dumps(chunk, separators=(",", ":")))

    async def receive(b: WebSocketConnection) -> None:
        got = 0
        while got < count:
            operations = json.loads(await b.get_message())
            reader.commit(len(operations))
            got += len(operations)

    try:
        return await _timed_stream(url, send, receive)
    finally:
        writer.close()
        reader.close()


async def relay_throughput(url: str, count: int) -> float:
    """Seconds until B has received ``count`` messages A sends as fast as it can."""

    async def send(a: WebSocketConnection) -> None:
        for _ in range(count):
            await a.send_message(_SMALL)

    async def receive(b: WebSocketConnection) -> None:
        for _ in range(count):
            await b.get_message()

    return await _timed_stream(url, send, receive)


async def _timed_stream(
    url: str,
    send: Callable[[WebSocketConnection], Awaitable[None]],
    receive: Callable[[WebSocketConnection], Awaitable[None]],
) -> float:
    """Seconds from the start of ``send(a)`` until ``receive(b)`` returned, over two
    connections to the relay at ``url``."""
    async with (
        open_websocket_url(url, message_queue_size=1024) as a,
        open_websocket_url(url, message_queue_size=1024) as b,
    ):
        await _connected(a, b)
        finished = [0.0]

        async def receiver() -> None:
            await receive(b)
            finished[0] = time.perf_counter()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            start = time.perf_counter()
            await send(a)
        return finished[0] - start


async def relay_fanout(url: str, receivers: int, writes: int) -> list[float]:
    """Per receiver and write: seconds from A's send to the receiver's read."""
    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        connections = []
        for _ in range(receivers):
            connections.append(await _open_in(nursery, url))
        writer = await _open_in(nursery, url)
        await trio.sleep(0.2)  # every accept handler registered its connection
        for _ in range(writes):
            start = time.perf_counter()
            arrived: list[float] = []

            async def read_one(ws: WebSocketConnection, arrived: list[float] = arrived) -> None:
                await ws.get_message()
                arrived.append(time.perf_counter())

            async with trio.open_nursery() as readers:
                for ws in connections:
                    readers.start_soon(read_one, ws)
                await trio.lowlevel.checkpoint()
                await writer.send_message(_SMALL)
            samples.extend(t - start for t in arrived)
            await trio.sleep(0.02)
        for ws in [*connections, writer]:
            await ws.aclose()
    return samples


async def _open_in(nursery: trio.Nursery, url: str) -> WebSocketConnection:
    from trio_websocket import connect_websocket_url

    return await connect_websocket_url(nursery, url)


async def _connected(a: WebSocketConnection, b: WebSocketConnection) -> None:
    # The relay registers a connection in its handler; one round trip proves both are in.
    with trio.fail_after(10):
        while True:
            await a.send_message("hello")
            with trio.move_on_after(0.2):
                await b.get_message()
                return


# ------------------------------------------------------------------------------ sqlite3


class RawClientRows:
    """The rows a client store writes for applied remote operations, nothing else."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("BEGIN IMMEDIATE")
        migrate(self.conn)
        self.conn.execute("COMMIT")
        self.seq = 0

    def close(self) -> None:
        self.conn.close()

    def _rows(self, count: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        ops, records = [], []
        for _ in range(count):
            self.seq += 1
            op_id = hashlib.sha256(str(self.seq).encode()).hexdigest()
            stamp = f"{1_700_000_000_000 + self.seq:015d}:00000:{_NODE}"
            record_id = f"rec-{self.seq:012d}"
            data = json.dumps({"k": self.seq, "title": f"item {self.seq}"}, separators=(",", ":"))
            ops.append((self.seq, op_id, _NODE, self.seq, "insert", "items", record_id, stamp,
                        data, None, None, "[]", 1, None, None))  # fmt: skip
            records.append(("items", record_id, data, "{}", "{}", 0, stamp, stamp, op_id))
        return ops, records

    def commit(self, count: int) -> list[dict[str, Any]]:
        """One durable transaction with ``count`` operations; returns them in wire form."""
        ops, records = self._rows(count)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO ops (rowid, id, node_id, sequence_number, type, collection, "
            "record_id, hlc, data, previous_data, atomic_ops, causal_deps, schema_version, "
            "transaction_id, mutation_name) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ops,
        )
        conn.executemany(
            "INSERT INTO records (collection, id, data, field_versions, field_atomic, deleted, "
            "version, created_version, last_op_id) VALUES (?,?,?,?,?,?,?,?,?)",
            records,
        )
        conn.execute(
            "INSERT INTO version_vector (node_id, sequence) VALUES (?, ?) ON CONFLICT (node_id) "
            "DO UPDATE SET sequence = max(sequence, excluded.sequence)",
            (_NODE, self.seq),
        )
        conn.execute(
            "INSERT OR REPLACE INTO watermarks (view, value, touched) VALUES ('', ?, ?)",
            (self.seq, self.seq),
        )
        conn.execute("COMMIT")
        return [
            {"id": op[1], "nodeId": op[2], "sequenceNumber": op[3], "type": op[4],
             "collection": op[5], "recordId": op[6], "timestamp": op[7], "data": op[8]}
            for op in ops
        ]  # fmt: skip


def sqlite_floors(report: Report, directory: Path, commits: int, sizes: list[int]) -> None:
    """Durable commit time, and rows of K applied operations in one and in 100-op commits."""
    raw = RawClientRows(directory / "floor-commit.db")
    raw.commit(1)
    start = time.perf_counter()
    for _ in range(commits):
        raw.commit(1)
    commit_ms = 1000 * (time.perf_counter() - start) / commits
    raw.close()
    report.emit("floor_sqlite", FLOOR, "durable_commit_ms", commit_ms, "ms")
    # A to B crosses three durable commits: A's local write, the server's append, B's apply.
    report.emit("latency", FLOOR, "three_commits_ms", 3 * commit_ms, "ms")
    for size in sizes:
        raw = RawClientRows(directory / f"floor-rows-{size}.db")
        start = time.perf_counter()
        raw.commit(size)
        one = time.perf_counter() - start
        raw.close()
        raw = RawClientRows(directory / f"floor-rows-{size}-b.db")
        start = time.perf_counter()
        for _ in range(max(1, size // 100)):
            raw.commit(100)
        batched = time.perf_counter() - start
        raw.close()
        report.emit(f"initial_sync_{size}", FLOOR, "synced_s", one, "s")
        report.emit(f"initial_sync_{size}", FLOOR, "rows_in_100_op_commits_s", batched, "s")


async def relay_floors(
    report: Report, url: str, *, latency_n: int, warmup: int, throughput_n: int,
    fanout_clients: int, fanout_writes: int,
) -> None:  # fmt: skip
    samples = await relay_latency(url, latency_n, warmup)
    report.emit("latency", FLOOR, "p50_ms", 1000 * percentile(samples, 50), "ms")
    report.emit("latency", FLOOR, "p99_ms", 1000 * percentile(samples, 99), "ms")
    elapsed = await relay_throughput(url, throughput_n)
    report.emit("throughput", FLOOR, "ops_per_s", throughput_n / elapsed, "ops/s")
    fan = await relay_fanout(url, fanout_clients, fanout_writes)
    report.emit("fanout", FLOOR, "p50_ms", 1000 * percentile(fan, 50), "ms")
    report.emit("fanout", FLOOR, "p99_ms", 1000 * percentile(fan, 99), "ms")


async def durable_relay_floors(
    report: Report, url: str, directory: Path, *, latency_n: int, warmup: int,
    throughput_n: int, per_tx: int,
) -> None:  # fmt: skip
    samples = await durable_relay_latency(url, directory, latency_n, warmup)
    report.emit("latency", FLOOR, "durable_relay_p50_ms", 1000 * percentile(samples, 50), "ms")
    report.emit("latency", FLOOR, "durable_relay_p99_ms", 1000 * percentile(samples, 99), "ms")
    elapsed = await durable_pipeline_throughput(url, directory, throughput_n, per_tx)
    report.emit("throughput", FLOOR, "durable_pipeline_ops_per_s", throughput_n / elapsed, "ops/s")
