"""The writing app alone: CPU per operation of app A of the ``throughput`` and ``latency``
scenarios, without app B in the process.

Run: ``.venv/bin/python -m bench.write_side_bench [--count 10000] [--rounds 3]
[--latency 300] [--profile out.prof]``.

A fresh ``kora serve`` child (its defaults, SQLite) and, per round, a fresh app (new SQLite
file, so a new node and a fresh rate-limit burst of 10,000 operations) that:

* ``throughput``: writes ``count`` small updates of one record in ``async with
  app.transaction()`` blocks of 1,000 (as the bench's ``throughput`` scenario) and waits
  until the server acknowledged and the app dequeued them all (``app.pending_operations()``
  is 0); prints this process's CPU (``time.process_time()``, all threads) per operation for
  the writes alone and until everything is dequeued, and the local write rate;
* ``latency``: ``--latency`` sequential single updates (``await items.update``), each
  awaited until its batch was acknowledged (``sync:acknowledged``): CPU per update.

The server's CPU is not counted: this measures the client's write side only.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import kora
from bench.driver.kora_stack import COLLECTION, SCHEMA
from bench.driver.procs import free_port, kora_serve_argv, run_child

PER_TX = 1000


class Acked:
    """Counts the operations the server acknowledged to an app (``sync:acknowledged``)."""

    def __init__(self, app: kora.App) -> None:
        self.total = 0
        self.changed = trio.Event()
        app.events.on("sync:acknowledged", self._on)

    def _on(self, event: kora.Event) -> None:
        self.total += event.payload["operations"]  # type: ignore[operator]
        self.changed.set()
        self.changed = trio.Event()

    async def wait_total(self, total: int, within: float = 120) -> None:
        with trio.fail_after(within):
            while self.total < total:
                await self.changed.wait()


@asynccontextmanager
async def _synced_writer(url: str, path: Path) -> AsyncIterator[tuple[kora.App, Acked, str]]:
    """A synced app with one acknowledged record to update: the app, its acknowledgment
    counter and the record's id."""
    async with kora.open_app(SCHEMA, path=str(path), sync=kora.SyncOptions(url=url)) as app:
        assert app.sync is not None
        await app.sync.connect()
        with trio.fail_after(60):
            await app.sync.wait_synced()
        acked = Acked(app)
        record = await app.collection(COLLECTION).insert({"k": -1})
        await acked.wait_total(1)
        yield app, acked, record.id


async def throughput_round(url: str, path: Path, count: int) -> dict[str, float]:
    async with _synced_writer(url, path) as (app, acked, record_id):
        base = acked.total
        gc.collect()
        times0, threads0 = os.times(), thread_cpu()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for first in range(0, count, PER_TX):
            async with app.transaction() as tx:
                staged = tx.collection(COLLECTION)
                for index in range(first, min(count, first + PER_TX)):
                    await staged.update(record_id, {"k": index})
        cpu1, wall1 = time.process_time(), time.perf_counter()
        await acked.wait_total(base + count)
        with trio.fail_after(60):
            while await app.pending_operations():
                await trio.sleep(0.001)
        cpu2, wall2 = time.process_time(), time.perf_counter()
        times2, threads2 = os.times(), thread_cpu()
    return {
        **_per_thread(threads0, threads2, count),
        "total_sys_us_per_op": 1e6 * (times2.system - times0.system) / count,
        "write_cpu_us_per_op": 1e6 * (cpu1 - cpu0) / count,
        "total_cpu_us_per_op": 1e6 * (cpu2 - cpu0) / count,
        "local_writes_per_s": count / (wall1 - wall0),
        "acked_s": wall2 - wall0,
    }


async def latency_round(url: str, path: Path, count: int) -> dict[str, float]:
    async with _synced_writer(url, path) as (app, acked, record_id):
        items = app.collection(COLLECTION)
        for index in range(20):  # warm-up
            await items.update(record_id, {"k": index})
            await acked.wait_total(acked.total + 1)
        gc.collect()
        times0, threads0 = os.times(), thread_cpu()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for index in range(count):
            target = acked.total + 1
            await items.update(record_id, {"k": index})
            await acked.wait_total(target)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        times1, threads1 = os.times(), thread_cpu()
    return {
        **_per_thread(threads0, threads1, count),
        "latency_cpu_us_per_update": 1e6 * (cpu1 - cpu0) / count,
        "latency_sys_us_per_update": 1e6 * (times1.system - times0.system) / count,
        "latency_ms_per_update": 1e3 * (wall1 - wall0) / count,
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kora-write-") as tmp:
        directory = Path(tmp)
        profiler = cProfile.Profile() if args.profile else None
        for round_index in range(args.rounds):
            # A fresh server per round: the new app has nothing to catch up on.
            port = free_port()
            argv = kora_serve_argv(port, str(directory / f"server-{round_index}.db"))
            async with run_child(argv, port, log=directory / "server.log") as child:
                if profiler is not None:
                    profiler.enable()
                if args.count:
                    row = await throughput_round(
                        child.ws_url, directory / f"tp-{round_index}.db", args.count
                    )
                    print(json.dumps({"round": round_index, **_rounded(row)}), flush=True)
                if args.latency:
                    row = await latency_round(
                        child.ws_url, directory / f"lat-{round_index}.db", args.latency
                    )
                    print(json.dumps({"round": round_index, **_rounded(row)}), flush=True)
                if profiler is not None:
                    profiler.disable()
        if profiler is not None:
            profiler.dump_stats(args.profile)


def thread_cpu(*, split: bool = False) -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name (``comm``); with
    ``split``, user and system time apart (``<name>_user``, ``<name>_sys``)."""
    tick = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                head, _, rest = stat.read().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        name = head.partition("(")[2]
        user, system = int(fields[11]) / tick, int(fields[12]) / tick
        parts = (
            ((f"{name}_user", user), (f"{name}_sys", system)) if split else ((name, user + system),)
        )
        for key, value in parts:
            spent[key] = spent.get(key, 0.0) + value
    return spent


def _per_thread(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    return {
        f"thread_{name}_us": 1e6 * (after[name] - before.get(name, 0.0)) / count
        for name in after
        if after[name] - before.get(name, 0.0) > 0
    }


def _rounded(row: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 2) for key, value in row.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="updates per round (<= 10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=int, default=0, help="single updates per round")
    parser.add_argument("--profile", help="write cProfile stats of the rounds to this file")
    trio.run(main, parser.parse_args())
