"""The peer, pycrdt-websocket, through the same scenarios as our stack.

The logic is the shared peer bench's (``bench/peers/pycrdt_bench.py``): a ``pycrdt.Map``
per client, one key set per update, observers on the receiving side, byte counts at the
client channel.  One change: the client channel is trio-websocket (the library our own
client uses) instead of httpx-ws, so both stacks share the client transport and the bench
needs no extra package.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from bench.driver.cpu import CpuMeter, emit_cpu
from bench.driver.procs import Child, peak_rss_bytes, rss_bytes
from bench.driver.report import PEER, Report, percentile
from bench.driver.wire import MAX_MESSAGE, Counters, frame_size


def available() -> bool:
    try:
        import pycrdt.websocket  # noqa: F401
    except ImportError:
        return False
    return True


class CountingChannel:
    """pycrdt ``Channel`` over a trio-websocket connection that counts frame bytes."""

    def __init__(self, ws: WebSocketConnection, path: str, counters: Counters) -> None:
        self._ws = ws
        self._path = path
        self.counters = counters

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> CountingChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self._ws.send_message(message)
        self.counters.sent_frames += 1
        self.counters.sent_bytes += frame_size(len(message), masked=True)

    async def recv(self) -> bytes:
        message = await self._ws.get_message()
        data = message.encode() if isinstance(message, str) else message
        self.counters.received_frames += 1
        self.counters.received_bytes += frame_size(len(data), masked=False)
        return data


@asynccontextmanager
async def open_peer_doc(url: str, room: str) -> AsyncIterator[tuple[Any, Any, Counters]]:
    """A synced ``(doc, map, counters)`` on ``room`` for the duration of the block."""
    from pycrdt import Doc, Map, Provider

    counters = Counters()
    async with open_websocket_url(
        url.rstrip("/") + room, max_message_size=MAX_MESSAGE, message_queue_size=65536
    ) as ws:
        doc: Any = Doc()
        entries = doc.get("m", type=Map)
        provider = Provider(doc, CountingChannel(ws, room, counters))
        async with provider:
            await provider.synced.wait()
            yield doc, entries, counters


async def latency_and_bytes(
    report: Report,
    child: Child | None,
    url: str,
    count: int,
    warmup: int,
    *,
    emit_latency: bool = False,
    emit_bytes: bool = False,
) -> None:
    async with (
        open_peer_doc(url, "/bench") as (_, map_a, ca),
        open_peer_doc(url, "/bench") as (_, map_b, cb),
    ):
        want: list[float] = [-1.0]
        seen = [trio.Event()]

        def observe(event: Any) -> None:
            change = event.keys.get("k")
            if change is not None and change.get("newValue") == want[0]:
                seen[0].set()

        subscription = map_b.observe(observe)
        sent_before, received_before = (ca.sent_frames, ca.sent_bytes), cb.received_bytes
        samples: list[float] = []
        meter = CpuMeter(child)
        for index in range(warmup + count):
            if index == warmup:
                meter.start()
            seen[0] = trio.Event()
            want[0] = float(index)
            start = time.perf_counter()
            map_a["k"] = index
            with trio.fail_after(5):
                await seen[0].wait()
            if index >= warmup:
                samples.append(time.perf_counter() - start)
        spent = meter.stop()
        map_b.unobserve(subscription)
        updates = ca.sent_frames - sent_before[0]
        if emit_latency:
            report.emit("latency", PEER, "p50_ms", 1000 * percentile(samples, 50), "ms")
            report.emit("latency", PEER, "p99_ms", 1000 * percentile(samples, 99), "ms")
            emit_cpu(report, "latency", PEER, spent, count)
        if emit_bytes:
            sent = (ca.sent_bytes - sent_before[1]) / updates
            received = (cb.received_bytes - received_before) / updates
            report.emit("wire_bytes", PEER, "writer_sent_per_op", sent, "B")
            report.emit("wire_bytes", PEER, "reader_received_per_op", received, "B")


async def throughput(
    report: Report,
    child: Child | None,
    url: str,
    count: int,
    *,
    per_tx: int = 1,
    scenario: str = "throughput",
) -> None:
    """A sets ``count`` new map keys as fast as it can; seconds until B has them all.

    ``per_tx == 1`` is the peer bench's method (one Y transaction, so one update message,
    per key).  ``per_tx > 1`` groups the keys in ``doc.transaction()`` blocks: the peer's
    counterpart of our app transactions, printed for context.
    """
    room = f"/{scenario}"
    async with (
        open_peer_doc(url, room) as (doc_a, map_a, _ca),
        open_peer_doc(url, room) as (_, map_b, _cb),
    ):
        got = [0]
        done = trio.Event()

        def observe(event: Any) -> None:
            for key, change in event.keys.items():
                if key[0] == "t" and change.get("action") == "add":
                    got[0] += 1
            if got[0] >= count:
                done.set()

        map_b.observe(observe)
        meter = CpuMeter(child)
        meter.start()
        start = time.perf_counter()
        if per_tx <= 1:
            for index in range(count):
                map_a[f"t{index}"] = index
                if index % 1000 == 999:
                    # let the provider start draining (as the peer bench)
                    await trio.lowlevel.checkpoint()
        else:
            for first in range(0, count, per_tx):
                with doc_a.transaction():
                    for index in range(first, min(count, first + per_tx)):
                        map_a[f"t{index}"] = index
                await trio.lowlevel.checkpoint()
        with trio.fail_after(120):
            await done.wait()
        elapsed = time.perf_counter() - start
        spent = meter.stop()
        report.emit(scenario, PEER, "ops_per_s", count / elapsed, "ops/s")
        emit_cpu(report, scenario, PEER, spent, count, floors=True)
        if child is not None and scenario == "throughput":
            peak = peak_rss_bytes(child.pid)
            if peak is not None:
                report.emit(scenario, PEER, "server_peak_rss_mib", peak / 2**20, "MiB")


async def initial_sync(report: Report, url: str, size: int, repeats: int) -> None:
    from pycrdt import Doc, Map, Provider

    times: list[float] = []
    for _ in range(repeats):
        counters = Counters()
        start = time.perf_counter()
        async with open_websocket_url(
            url.rstrip("/") + f"/init{size}", max_message_size=MAX_MESSAGE
        ) as ws:
            doc: Any = Doc()
            entries = doc.get("m", type=Map)
            async with Provider(doc, CountingChannel(ws, f"/init{size}", counters)) as provider:
                await provider.synced.wait()
                elapsed = time.perf_counter() - start
                if len(entries) != size:
                    raise RuntimeError(f"peer synced {len(entries)} of {size} entries")
        times.append(elapsed)
    times.sort()
    report.emit(f"initial_sync_{size}", PEER, "synced_s", times[len(times) // 2], "s")


async def fanout(
    report: Report, child: Child | None, url: str, receivers: int, writes: int
) -> None:
    samples: list[float] = []
    arrived: list[float] = []
    want: list[int] = [-1]

    def observer(event: Any) -> None:
        change = event.keys.get("f")
        if change is not None and change.get("newValue") == want[0]:
            arrived.append(time.perf_counter())

    async with (
        _many_docs(url, "/fanout", receivers, observer) as _,
        open_peer_doc(url, "/fanout") as (_, map_a, _ca),
    ):
        await trio.sleep(0.2)
        meter = CpuMeter(child)
        meter.start()
        for index in range(writes):
            arrived.clear()
            want[0] = index
            start = time.perf_counter()
            map_a["f"] = index
            with trio.fail_after(10):
                while len(arrived) < receivers:
                    await trio.sleep(0.0005)
            samples.extend(t - start for t in arrived)
            await trio.sleep(0.02)
        spent = meter.stop()
    report.emit("fanout", PEER, "p50_ms", 1000 * percentile(samples, 50), "ms")
    report.emit("fanout", PEER, "p99_ms", 1000 * percentile(samples, 99), "ms")
    if spent.server is not None and writes:
        report.emit("fanout", PEER, "server_cpu_ms_per_write", 1000 * spent.server / writes, "ms")


@asynccontextmanager
async def _many_docs(url: str, room: str, count: int, observer: Any) -> AsyncIterator[None]:
    """``count`` synced docs on ``room``, opened one after the other.

    One at a time because pycrdt-websocket 0.16 loses the sync of some clients that join a
    room at the same moment (seen here: 2 of 5 concurrent joins never got SyncStep2).
    """
    async with trio.open_nursery() as nursery:

        async def hold(*, task_status: trio.TaskStatus[None]) -> None:
            async with open_peer_doc(url, room) as (_, entries, _c):
                entries.observe(observer)
                task_status.started()
                await trio.sleep_forever()

        with trio.fail_after(120):
            for _ in range(count):
                await nursery.start(hold)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()  # no graceful close of every socket: not measured


async def idle_memory(report: Report, child: Child, url: str, connections: int) -> None:
    """RSS delta of the server per connection that joined a room and then stays idle."""
    from pycrdt import Doc, create_sync_message

    hello = create_sync_message(Doc())
    async with trio.open_nursery() as nursery:

        async def hold(*, task_status: trio.TaskStatus[None]) -> None:
            async with open_websocket_url(url.rstrip("/") + "/idle") as ws:
                await ws.send_message(hello)
                await ws.get_message()  # the room's answer: it holds the connection now
                task_status.started()
                await trio.sleep_forever()

        with trio.fail_after(300):
            for _ in range(10):  # warm the code paths before the baseline
                await nursery.start(hold)
            await trio.sleep(0.5)
            before = rss_bytes(child.pid) or 0
            for _ in range(connections):  # one at a time, see _many_docs
                await nursery.start(hold)
        await trio.sleep(1.0)
        after = rss_bytes(child.pid) or 0
        nursery.cancel_scope.cancel()
    report.emit("memory", PEER, "per_idle_conn_kib", (after - before) / connections / 1024, "KiB")
