"""The receiving app alone: CPU per operation of app B of the ``throughput`` scenario,
without app A in the process.

Run: ``.venv/bin/python -m bench.read_side_bench [--count 10000] [--rounds 3]
[--profile out.prof]``.

Per round, a fresh ``kora serve`` child (its defaults, SQLite), a fresh app B in this
process (new SQLite file) and a writer child process (app A, ``--writer``) that inserts one
record and then updates it ``count`` times in ``async with app.transaction()`` blocks of
1,000, as the bench's ``throughput`` scenario.  B's CPU (``time.process_time()``, all
threads, and per thread from ``/proc``) is taken once B received the insert and again once
it received the last update (``sync:received``): between the two B does nothing but
receive, apply and acknowledge those updates.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.driver.kora_stack import COLLECTION, Received, open_synced_app
from bench.driver.procs import free_port, kora_serve_argv, run_child
from bench.write_side_bench import PER_TX, _per_thread, _rounded
from bench.write_side_bench import thread_cpu as write_side_thread_cpu


def thread_cpu() -> dict[str, float]:
    """User and system CPU seconds of each live thread of this process, by thread name."""
    return write_side_thread_cpu(split=True)


async def writer(url: str, path: str, count: int) -> None:
    """App A: one insert, then ``count`` updates of it; returns once all are dequeued."""
    async with open_synced_app(url, Path(path)) as app:
        items = app.collection(COLLECTION)
        record = await items.insert({"k": -1})
        await trio.sleep(0.5)  # B takes its first CPU reading meanwhile
        for first in range(0, count, PER_TX):
            async with app.transaction() as tx:
                staged = tx.collection(COLLECTION)
                for index in range(first, min(count, first + PER_TX)):
                    await staged.update(record.id, {"k": index})
        with trio.fail_after(120):
            while await app.pending_operations():
                await trio.sleep(0.01)


async def reader_round(
    url: str, directory: Path, count: int, profiler: cProfile.Profile | None
) -> dict[str, float]:
    async with open_synced_app(url, directory / "b.db") as app:
        received = Received(app)
        argv = [
            sys.executable,
            "-m",
            "bench.read_side_bench",
            "--writer",
            url,
            str(directory / "a.db"),
            "--count",
            str(count),
        ]
        # Popen from the trio thread on purpose (see bench.driver.procs._spawn).
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)  # noqa: ASYNC220
        try:
            await received.wait_total(1, 60)
            gc.collect()
            threads0 = thread_cpu()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if profiler is not None:
                profiler.enable()
            await received.wait_total(1 + count, 300)
            if profiler is not None:
                profiler.disable()
            cpu1, wall1 = time.process_time(), time.perf_counter()
            threads1 = thread_cpu()
        finally:
            while process.poll() is None:
                await trio.sleep(0.05)
    return {
        **_per_thread(threads0, threads1, count),
        "reader_cpu_us_per_op": 1e6 * (cpu1 - cpu0) / count,
        "reader_s": wall1 - wall0,
    }


async def main(args: argparse.Namespace) -> None:
    if args.writer:
        await writer(args.writer[0], args.writer[1], args.count)
        return
    with tempfile.TemporaryDirectory(prefix="kora-read-") as tmp:
        # CPU time of the trio thread (the store thread is not profiled).
        profiler = cProfile.Profile(time.thread_time) if args.profile else None
        for round_index in range(args.rounds):
            directory = Path(tmp) / str(round_index)
            directory.mkdir()
            port = free_port()
            argv = kora_serve_argv(port, str(directory / "server.db"))
            async with run_child(argv, port, log=directory / "server.log") as child:
                row = await reader_round(child.ws_url, directory, args.count, profiler)
                print(json.dumps({"round": round_index, **_rounded(row)}), flush=True)
        if profiler is not None:
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="updates per round (<= 10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writer", nargs=2, metavar=("URL", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", help="write cProfile stats of the measured spans to this file")
    trio.run(main, parser.parse_args())
