"""Our stack through the scenarios: full apps where the issue asks for apps, wire clients
where a connection is all that is measured.

* latency, throughput, initial sync: ``kora.open_app`` with SQLite files and
  ``SyncOptions(url=...)`` on both sides; the receiving app counts what it applied through
  its ``sync:received`` event (published right after the store committed the batch).
* fan-out, bytes on the wire, idle memory: lightweight protocol clients
  (:mod:`bench.driver.wire`), many per process.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import kora
from bench.driver.cpu import CpuMeter, emit_cpu
from bench.driver.procs import Child, peak_rss_bytes, rss_bytes
from bench.driver.report import KORA, Report, percentile
from bench.driver.wire import (
    COLLECTION,
    OperationFactory,
    WireClient,
    WireFormatName,
    open_wire_client,
)
from kora.core.operation import Operation
from kora.protocol import OperationBatch

SCHEMA = kora.define_schema(
    version=1,
    collections={COLLECTION: {"k": kora.integer(default=0), "title": kora.string(default="")}},
)


@asynccontextmanager
async def open_synced_app(url: str, path: Path, **options: Any) -> AsyncIterator[kora.App]:
    async with kora.open_app(SCHEMA, path=str(path), sync=kora.SyncOptions(url=url, **options)) as app:  # fmt: skip
        assert app.sync is not None
        await app.sync.connect()
        with trio.fail_after(60):
            await app.sync.wait_synced()
        yield app


class Received:
    """Counts the operations an app applied from the server, by id or in total."""

    def __init__(self, app: kora.App) -> None:
        self.total = 0
        self.waiting: dict[str, trio.Event] = {}
        self.changed = trio.Event()
        app.events.on("sync:received", self._on)

    def _on(self, event: kora.Event) -> None:
        operations: tuple[Operation, ...] = event.payload["operations"]  # type: ignore[assignment]
        self.total += len(operations)
        for operation in operations:
            waiter = self.waiting.pop(operation.id, None)
            if waiter is not None:
                waiter.set()
        self.changed.set()
        self.changed = trio.Event()

    async def wait_total(self, total: int, within: float) -> None:
        with trio.fail_after(within):
            while self.total < total:
                await self.changed.wait()


# ----------------------------------------------------------------------------- latency


async def latency(
    report: Report, child: Child | None, url: str, directory: Path, count: int, warmup: int
) -> None:
    """Sequential updates A -> server -> B; also the CPU each update costs both sides."""
    async with (
        open_synced_app(url, directory / "lat-a.db") as a,
        open_synced_app(url, directory / "lat-b.db") as b,
    ):
        received = Received(b)
        items = a.collection(COLLECTION)
        record = await items.insert({"k": -1})
        await received.wait_total(1, 30)
        samples: list[float] = []
        meter = CpuMeter(child)
        for index in range(warmup + count):
            if index == warmup:
                meter.start()
            start = time.perf_counter()
            before = received.total
            await items.update(record.id, {"k": index})
            await received.wait_total(before + 1, 10)
            if index >= warmup:
                samples.append(time.perf_counter() - start)
        spent = meter.stop()
    report.emit("latency", KORA, "p50_ms", 1000 * percentile(samples, 50), "ms")
    report.emit("latency", KORA, "p99_ms", 1000 * percentile(samples, 99), "ms")
    emit_cpu(report, "latency", KORA, spent, count)


# -------------------------------------------------------------------------- throughput


def throughput_scenario(per_tx: int, headline: int) -> str:
    """The row name of a throughput variant: ``throughput`` for the headline transaction size,
    ``throughput_single`` for one app write per update, ``throughput_tx<N>`` otherwise."""
    if per_tx == headline:
        return "throughput"
    return "throughput_single" if per_tx <= 1 else f"throughput_tx{per_tx}"


async def throughput(
    report: Report,
    child: Child | None,
    url: str,
    directory: Path,
    count: int,
    per_tx: int,
    scenario: str,
) -> None:
    """A writes ``count`` small updates as fast as it can; seconds until B has them all.

    ``per_tx <= 1``: one awaited app write (one durable commit) per update.
    ``per_tx > 1``: the same updates in app transactions (``async with app.transaction()``)
    of ``per_tx`` writes, one durable commit each: the fastest durable way the app API
    offers to write many updates.

    The clock and the CPU meters start right before A's first write and stop when B's store
    holds the last update.
    """
    async with (
        open_synced_app(url, directory / f"{scenario}-a.db") as a,
        open_synced_app(url, directory / f"{scenario}-b.db") as b,
    ):
        received = Received(b)
        items = a.collection(COLLECTION)
        record = await items.insert({"k": -1})
        await received.wait_total(1, 30)
        base = received.total
        sampler = _PeakSampler(child)
        meter = CpuMeter(child)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            meter.start()
            start = time.perf_counter()
            if per_tx <= 1:
                for index in range(count):
                    await items.update(record.id, {"k": index})
            else:
                for first in range(0, count, per_tx):
                    async with a.transaction() as tx:
                        staged = tx.collection(COLLECTION)
                        for index in range(first, min(count, first + per_tx)):
                            await staged.update(record.id, {"k": index})
            written = time.perf_counter() - start
            await received.wait_total(base + count, 600)
            elapsed = time.perf_counter() - start
            spent = meter.stop()
            nursery.cancel_scope.cancel()
    report.emit(scenario, KORA, "ops_per_s", count / elapsed, "ops/s")
    report.emit(scenario, KORA, "local_writes_per_s", count / written, "ops/s")
    emit_cpu(report, scenario, KORA, spent, count, floors=True)
    if sampler.peak is not None and scenario == "throughput":  # the figure; one row
        report.emit(scenario, KORA, "server_peak_rss_mib", sampler.peak / 2**20, "MiB")


class _PeakSampler:
    """The server's highest RSS while the block runs (VmHWM covers the child's life)."""

    def __init__(self, child: Child | None) -> None:
        self._child = child
        self.peak: int | None = None

    async def run(self) -> None:
        if self._child is None:
            return
        while True:
            value = peak_rss_bytes(self._child.pid) or rss_bytes(self._child.pid)
            if value is not None:
                self.peak = max(self.peak or 0, value)
            await trio.sleep(0.05)


# ------------------------------------------------------------------------ initial sync


def prefill_operations(
    count: int, *, first: int = 0, node_id: str | None = None
) -> list[Operation]:
    """``count`` inserts of distinct small records (``rec-<first>``...) by one writer node."""
    factory = OperationFactory(node_id)
    return [
        factory.insert(f"rec-{i:09d}", {"k": i, "title": f"item {i}"})
        for i in range(first, first + count)
    ]


async def prefill_server_store(path: Path, count: int) -> None:
    """The fastest legitimate pre-fill: the server's own store, before the server starts."""
    from kora.server.stores import open_server_store

    operations = prefill_operations(count)
    async with open_server_store(str(path)) as store:
        for start in range(0, count, 10_000):
            await store.append_batch(operations[start : start + 10_000])


#: Operations one pre-fill node sends: below ``kora serve``'s default burst of 10,000 per node
#: (``ServerLimits.ops_burst``; the sustained rate is 2,000 ops/min).
PREFILL_PER_NODE = 9_000


async def prefill_over_wire(
    url: str, count: int, *, first: int = 0, batch: int = 1000, window: int = 4
) -> None:
    """Pre-fill a server we do not own: clients push the operations once, a fresh node (and
    connection) per ``PREFILL_PER_NODE`` operations so the rate limit is never hit."""
    for start in range(first, first + count, PREFILL_PER_NODE):
        size = min(PREFILL_PER_NODE, first + count - start)
        async with open_wire_client(url) as client:
            operations = prefill_operations(size, first=start, node_id=client.node_id)
            in_flight: list[trio.Event] = []
            with trio.fail_after(300):
                for offset in range(0, size, batch):
                    in_flight.append(await client.push(operations[offset : offset + batch]))
                    if len(in_flight) >= window:
                        await in_flight.pop(0).wait()
                for acked in in_flight:
                    await acked.wait()


async def initial_sync(
    report: Report, url: str, directory: Path, size: int, repeats: int, expect: int
) -> None:
    """A fresh app (new SQLite file) connects; seconds until it holds all ``expect`` records."""
    times: list[float] = []
    for repeat in range(repeats):
        start = time.perf_counter()
        async with open_synced_app(url, directory / f"fresh-{size}-{repeat}.db") as app:
            held = await app.collection(COLLECTION).count()
            elapsed = time.perf_counter() - start
            if held < expect:
                raise RuntimeError(f"synced with {held} of {expect} records")
        times.append(elapsed)
    times.sort()
    report.emit(f"initial_sync_{size}", KORA, "synced_s", times[len(times) // 2], "s")


# ---------------------------------------------------------------------------- fan-out


async def fanout(
    report: Report, child: Child | None, url: str, receivers: int, writes: int
) -> None:
    """One write of a wire client reaching ``receivers`` wire clients (JSON)."""
    arrived: dict[str, list[float]] = {}

    def on_delivery(at: float, batch: OperationBatch) -> None:
        for operation in batch.operations:
            times = arrived.get(operation.id)
            if times is not None:
                times.append(at)

    samples: list[float] = []
    meter = CpuMeter(child)
    async with _many_clients(url, receivers, on_delivery), open_wire_client(url) as writer:
        factory = OperationFactory(writer.node_id)
        meter.start()
        for index in range(writes):
            operation = factory.insert(f"fan-{index}", {"k": index})
            times: list[float] = []
            arrived[operation.id] = times
            start = time.perf_counter()
            await writer.push([operation])
            with trio.fail_after(30):
                while len(times) < receivers:
                    await trio.sleep(0.0005)
            samples.extend(t - start for t in times)
            await trio.sleep(0.02)
        spent = meter.stop()
    report.emit("fanout", KORA, "p50_ms", 1000 * percentile(samples, 50), "ms")
    report.emit("fanout", KORA, "p99_ms", 1000 * percentile(samples, 99), "ms")
    if spent.server is not None and writes:
        # Everything the server did for one write: decode, append, relay to every receiver,
        # and take each receiver's acknowledgment.
        report.emit("fanout", KORA, "server_cpu_ms_per_write", 1000 * spent.server / writes, "ms")


@asynccontextmanager
async def _many_clients(
    url: str,
    count: int,
    on_delivery: Callable[[float, OperationBatch], None] | None = None,
    wire_format: WireFormatName = "json",
    parallel: int = 50,
) -> AsyncIterator[list[WireClient]]:
    """``count`` handshaken clients, opened ``parallel`` at a time, closed at the end."""
    clients: list[WireClient] = []
    limiter = trio.CapacityLimiter(parallel)
    async with trio.open_nursery() as nursery:

        async def hold(*, task_status: trio.TaskStatus[WireClient]) -> None:
            async with open_wire_client(url, wire_format=wire_format, on_delivery=on_delivery) as client:  # fmt: skip
                task_status.started(client)
                await trio.sleep_forever()

        async def start_one() -> None:
            async with limiter:
                clients.append(await nursery.start(hold))

        async with trio.open_nursery() as starters:
            for _ in range(count):
                starters.start_soon(start_one)
        try:
            yield clients
        finally:
            nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------- wire bytes


async def wire_bytes(report: Report, url: str, count: int) -> None:
    """Frame bytes per operation, JSON vs kora-pb1: single-op batches and 100-op batches."""
    per_format: dict[str, float] = {}
    for wire_format in ("json", "kora-pb1"):
        suffix = "" if wire_format == "json" else "_pb1"
        for per_batch in (1, 100):
            sent, received, total = await _bytes_per_op(url, wire_format, count, per_batch)
            label = "" if per_batch == 1 else "_batch100"
            report.emit("wire_bytes", KORA, f"writer_sent_per_op{label}{suffix}", sent, "B")
            report.emit("wire_bytes", KORA, f"reader_received_per_op{label}{suffix}", received, "B")  # fmt: skip
            report.emit("wire_bytes", KORA, f"all_frames_per_op{label}{suffix}", total, "B")
            per_format[f"{wire_format}{label}"] = sent
    report.emit("wire_bytes", KORA, "pb1_over_json_single", per_format["kora-pb1"] / per_format["json"], "x")  # fmt: skip
    report.emit("wire_bytes", KORA, "pb1_over_json_batch100", per_format["kora-pb1_batch100"] / per_format["json_batch100"], "x")  # fmt: skip


async def _bytes_per_op(
    url: str, wire_format: WireFormatName, count: int, per_batch: int
) -> tuple[float, float, float]:
    mine: set[str] = set()
    got = [0]

    def on_delivery(_: float, batch: OperationBatch) -> None:
        got[0] += sum(1 for op in batch.operations if op.id in mine)

    async with (
        open_wire_client(url, wire_format=wire_format) as writer,
        open_wire_client(url, wire_format=wire_format, on_delivery=on_delivery) as reader,
    ):
        factory = OperationFactory(writer.node_id)
        record = f"bytes-{wire_format}-{per_batch}"
        first = factory.insert(record, {"k": 0})
        mine.add(first.id)
        await (await writer.push([first])).wait()
        await _until(lambda: got[0] >= 1)
        w0, r0 = _snapshot(writer), _snapshot(reader)
        batches = max(1, count // per_batch)
        for index in range(batches * per_batch):
            if index % per_batch == 0:
                batch = []
            operation = factory.update(record, {"k": index + 1}, {"k": index})
            mine.add(operation.id)
            batch.append(operation)
            if len(batch) == per_batch:
                await (await writer.push(batch)).wait()
        await _until(lambda: got[0] >= 1 + batches * per_batch)
        await trio.sleep(0.05)  # the reader's last acknowledgment is sent
        ops = batches * per_batch
        w1, r1 = _snapshot(writer), _snapshot(reader)
    sent = (w1[0] - w0[0]) / ops
    received = (r1[1] - r0[1]) / ops
    total = (w1[0] - w0[0] + w1[1] - w0[1] + r1[0] - r0[0] + r1[1] - r0[1]) / ops
    return sent, received, total


def _snapshot(client: WireClient) -> tuple[int, int]:
    return client.counters.sent_bytes, client.counters.received_bytes


async def _until(condition: Callable[[], bool], within: float = 30) -> None:
    with trio.fail_after(within):
        while not condition():
            await trio.sleep(0.001)


# ------------------------------------------------------------------------ idle memory


async def idle_memory(report: Report, child: Child, url: str, connections: int) -> None:
    """RSS delta of the server per handshaken, idle connection.

    The baseline is taken after 10 connections came and went (code paths loaded, buffers
    allocated once), so ``kora serve``'s default connection cap is not reached.
    """
    async with _many_clients(url, 10):
        pass
    await trio.sleep(0.5)
    before = rss_bytes(child.pid) or 0
    async with _many_clients(url, connections):
        await trio.sleep(1.0)
        after = rss_bytes(child.pid) or 0
    report.emit("memory", KORA, "per_idle_conn_kib", (after - before) / connections / 1024, "KiB")
