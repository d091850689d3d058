"""``python -m bench`` (``make bench``): our stack, pycrdt-websocket and the machine's floors,
side by side, in one run on 127.0.0.1.

Scenarios (``--scenarios`` takes a comma-separated subset):

* ``floors``: raw sqlite3 (durable commit, the rows of an initial sync) and a bare
  trio-websocket relay (latency, throughput, fan-out) in a child process;
* ``latency``: A -> server -> B of one small update, p50/p99 over sequential updates;
* ``throughput``: A writes 10,000 small updates as fast as it can (app transactions of
  1,000), until B has them all; also ``throughput_tx100`` and ``throughput_single`` (one
  awaited durable write per update), the server's peak RSS, and the CPU per operation of
  the server and of the clients with the rate that CPU alone would allow;
* ``initial_sync``: a fresh client syncs 10,000 and 100,000 records from a pre-filled server;
* ``fanout``: one write reaching 200 connected clients, p50/p99;
* ``wire_bytes``: frame bytes per operation, JSON and kora-pb1;
* ``memory``: server RSS per idle connection (1,000 connections).

Every figure is printed as a JSON line ``{"scenario","system","metric","value","unit"}`` as
soon as it is measured; lines starting with ``#`` are notes.  The run ends with a table
(kora, pycrdt, floor, and the ratios) and the issue's targets as PASS/FAIL/N/A.  See
docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import trio

from bench.driver import cpu, floors, kora_stack, peer
from bench.driver.procs import (
    Child,
    free_port,
    kora_serve_argv,
    module_argv,
    run_child,
)
from bench.driver.report import FLOOR, KORA, PEER, Report, Target

SCENARIOS: Final = (
    "floors",
    "latency",
    "throughput",
    "initial_sync",
    "fanout",
    "wire_bytes",
    "memory",
)


@attrs.frozen
class Sizes:
    latency_n: int = 500
    warmup: int = 20
    throughput_n: int = 10_000
    #: The headline ``throughput`` row: app transactions of this many updates.
    per_tx: int = 1000
    #: Extra rows, after the peer's: ``throughput_tx<N>``, and ``throughput_single`` for 1.
    per_tx_variants: tuple[int, ...] = (100, 1)
    init_sizes: tuple[int, ...] = (10_000, 100_000)
    init_repeats: tuple[int, ...] = (3, 1)
    fanout_clients: int = 200
    fanout_writes: int = 20
    wire_n: int = 200
    idle_connections: int = 1000
    commits: int = 200
    budget_s: float = 570.0  # the whole run; make bench must end within 10 minutes


QUICK: Final = Sizes(
    latency_n=10,
    warmup=2,
    throughput_n=40,
    per_tx=10,
    per_tx_variants=(1,),
    init_sizes=(200,),
    init_repeats=(1,),
    fanout_clients=5,
    fanout_writes=2,
    wire_n=10,
    idle_connections=10,
    commits=5,
    budget_s=120.0,
)


@attrs.define
class Context:
    report: Report
    sizes: Sizes
    directory: Path
    server_url: str | None
    with_peer: bool

    @asynccontextmanager
    async def kora_server(self, name: str) -> AsyncIterator[tuple[Child | None, str]]:
        """A fresh ``kora serve`` (own SQLite file), or the server of ``--server-url``."""
        if self.server_url is not None:
            yield None, self.server_url
            return
        port = free_port()
        argv = kora_serve_argv(port, str(self.directory / f"{name}-server.db"))
        async with run_child(argv, port, log=self.directory / f"{name}-server.log") as child:
            yield child, child.ws_url

    @asynccontextmanager
    async def peer_server(self, init_sizes: tuple[int, ...] = ()) -> AsyncIterator[Child]:
        port = free_port()
        argv = module_argv(
            "bench.driver.peer_server",
            "--port",
            str(port),
            "--init",
            ",".join(map(str, init_sizes)),
        )
        log = self.directory / f"peer-{port}.log"
        async with run_child(argv, port, log=log, startup_timeout=120) as child:
            yield child


async def _guarded(report: Report, label: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run one system's part of a scenario; a failure is reported, never hidden or fatal."""
    try:
        await step()
    except Exception as exc:  # reported in the output and the table's notes
        traceback.print_exc(file=sys.stderr)
        leaves = _leaves(exc)
        text = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
        report.note(f"{label} failed: {text}"[:500])


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


# ------------------------------------------------------------------------------ scenarios


async def run_floors(ctx: Context) -> None:
    s = ctx.sizes
    floors.sqlite_floors(ctx.report, ctx.directory, s.commits, list(s.init_sizes))
    port = free_port()
    argv = module_argv("bench.driver.relay", "--port", str(port))
    async with run_child(argv, port, log=ctx.directory / "relay.log") as relay:
        await floors.relay_floors(
            ctx.report,
            relay.ws_url,
            latency_n=s.latency_n,
            warmup=s.warmup,
            throughput_n=s.throughput_n,
            fanout_clients=s.fanout_clients,
            fanout_writes=s.fanout_writes,
        )
    port = free_port()
    durable = str(ctx.directory / "durable-relay-server.db")
    argv = module_argv("bench.driver.relay", "--port", str(port), "--durable", durable)
    async with run_child(argv, port, log=ctx.directory / "durable-relay.log") as relay:
        await floors.durable_relay_floors(
            ctx.report,
            relay.ws_url,
            ctx.directory,
            latency_n=s.latency_n,
            warmup=s.warmup,
            throughput_n=s.throughput_n,
            per_tx=s.per_tx,
        )


async def run_latency(ctx: Context) -> None:
    s = ctx.sizes

    async def ours() -> None:
        async with ctx.kora_server("latency") as (child, url):
            await kora_stack.latency(ctx.report, child, url, ctx.directory, s.latency_n, s.warmup)

    async def theirs() -> None:
        async with ctx.peer_server() as child:
            await peer.latency_and_bytes(
                ctx.report, child, child.ws_url, s.latency_n, s.warmup, emit_latency=True
            )

    await _guarded(ctx.report, "latency/kora", ours)
    if ctx.with_peer:
        await _guarded(ctx.report, "latency/pycrdt", theirs)


async def run_throughput(ctx: Context) -> None:
    s = ctx.sizes

    async def ours(per_tx: int, scenario: str) -> None:
        async with ctx.kora_server(scenario) as (child, url):
            await kora_stack.throughput(
                ctx.report, child, url, ctx.directory, s.throughput_n, per_tx, scenario
            )

    async def theirs() -> None:
        async with ctx.peer_server() as child:
            await peer.throughput(ctx.report, child, child.ws_url, s.throughput_n)
            if s.per_tx > 1:  # context: the peer with transactions of our headline's size
                await peer.throughput(
                    ctx.report,
                    child,
                    child.ws_url,
                    s.throughput_n,
                    per_tx=s.per_tx,
                    scenario=f"throughput_tx{s.per_tx}",
                )

    # The headline and the peer first, one after the other, so they share the machine's
    # conditions as closely as a shared machine allows.
    await _guarded(ctx.report, "throughput/kora", partial(ours, s.per_tx, "throughput"))
    if ctx.with_peer:
        await _guarded(ctx.report, "throughput/pycrdt", theirs)
    for per_tx in s.per_tx_variants:
        scenario = kora_stack.throughput_scenario(per_tx, s.per_tx)
        await _guarded(ctx.report, f"{scenario}/kora", partial(ours, per_tx, scenario))


async def run_initial_sync(ctx: Context) -> None:
    s = ctx.sizes
    pushed = 0

    async def ours(size: int, repeats: int) -> None:
        nonlocal pushed
        if ctx.server_url is not None:
            await kora_stack.prefill_over_wire(ctx.server_url, size - pushed, first=pushed)
            pushed = size
            await kora_stack.initial_sync(
                ctx.report, ctx.server_url, ctx.directory, size, repeats, size
            )
            return
        started = time.perf_counter()
        await kora_stack.prefill_server_store(ctx.directory / f"init-{size}-server.db", size)
        ctx.report.note(f"pre-filled {size} records in {time.perf_counter() - started:.1f} s")
        async with ctx.kora_server(f"init-{size}") as (_, url):
            await kora_stack.initial_sync(ctx.report, url, ctx.directory, size, repeats, size)

    async def theirs() -> None:
        async with ctx.peer_server(s.init_sizes) as child:
            for size, repeats in zip(s.init_sizes, s.init_repeats, strict=True):
                await peer.initial_sync(ctx.report, child.ws_url, size, repeats)

    for size, repeats in zip(s.init_sizes, s.init_repeats, strict=True):
        await _guarded(ctx.report, f"initial_sync_{size}/kora", partial(ours, size, repeats))
    if ctx.with_peer:
        await _guarded(ctx.report, "initial_sync/pycrdt", theirs)


async def run_fanout(ctx: Context) -> None:
    s = ctx.sizes

    async def ours() -> None:
        async with ctx.kora_server("fanout") as (child, url):
            await kora_stack.fanout(ctx.report, child, url, s.fanout_clients, s.fanout_writes)

    async def theirs() -> None:
        async with ctx.peer_server() as child:
            await peer.fanout(ctx.report, child, child.ws_url, s.fanout_clients, s.fanout_writes)

    await _guarded(ctx.report, "fanout/kora", ours)
    if ctx.with_peer:
        await _guarded(ctx.report, "fanout/pycrdt", theirs)


async def run_wire_bytes(ctx: Context) -> None:
    s = ctx.sizes

    async def ours() -> None:
        async with ctx.kora_server("wire") as (_, url):
            await kora_stack.wire_bytes(ctx.report, url, s.wire_n)

    async def theirs() -> None:
        async with ctx.peer_server() as child:
            await peer.latency_and_bytes(
                ctx.report, child, child.ws_url, s.wire_n, 3, emit_bytes=True
            )

    await _guarded(ctx.report, "wire_bytes/kora", ours)
    if ctx.with_peer:
        await _guarded(ctx.report, "wire_bytes/pycrdt", theirs)


async def run_memory(ctx: Context) -> None:
    s = ctx.sizes
    if ctx.server_url is not None:
        ctx.report.note("memory: skipped for --server-url (the server process is not ours)")
        return

    async def ours() -> None:
        async with ctx.kora_server("memory") as (child, url):
            assert child is not None
            await kora_stack.idle_memory(ctx.report, child, url, s.idle_connections)

    async def theirs() -> None:
        async with ctx.peer_server() as child:
            await peer.idle_memory(ctx.report, child, child.ws_url, s.idle_connections)

    await _guarded(ctx.report, "memory/kora", ours)
    if ctx.with_peer:
        await _guarded(ctx.report, "memory/pycrdt", theirs)


RUNNERS: Final[dict[str, Callable[[Context], Awaitable[None]]]] = {
    "floors": run_floors,
    "latency": run_latency,
    "throughput": run_throughput,
    "initial_sync": run_initial_sync,
    "fanout": run_fanout,
    "wire_bytes": run_wire_bytes,
    "memory": run_memory,
}


# -------------------------------------------------------------------------------- targets


def targets(sizes: Sizes) -> list[Target]:
    largest = f"initial_sync_{max(sizes.init_sizes)}"
    return [
        Target(
            "latency p50 vs pycrdt",
            1.0,
            lambda r: r.ratio(("latency", KORA, "p50_ms"), ("latency", PEER, "p50_ms")),
            "kora p50 / pycrdt p50",
            context=latency_context,
        ),
        Target(
            "latency p50 vs relay floor",
            3.0,
            lambda r: r.ratio(("latency", KORA, "p50_ms"), ("latency", FLOOR, "p50_ms")),
            "kora p50 / bare relay p50",
            context=latency_context,
        ),
        Target(
            "throughput vs pycrdt",
            10.0,
            lambda r: r.ratio(("throughput", KORA, "ops_per_s"), ("throughput", PEER, "ops_per_s")),
            f"kora ops/s / pycrdt ops/s; kora: {sizes.throughput_n:,} updates in app "
            f"transactions of {sizes.per_tx:,}, durable SQLite on server, A and B",
            higher_is_better=True,
            context=partial(throughput_context, per_tx=sizes.per_tx),
        ),
        Target(
            f"{largest} vs sqlite3 floor",
            1.5,
            lambda r: r.ratio((largest, KORA, "synced_s"), (largest, FLOOR, "synced_s")),
            "kora seconds / raw sqlite3 writing the same rows in one transaction",
        ),
        Target(
            "kora-pb1 bytes vs JSON",
            0.35,
            lambda r: r.get("wire_bytes", KORA, "pb1_over_json_single"),
            "writer's frame bytes per single-op batch, pb1 / JSON",
        ),
        Target(
            f"fan-out p99 ({sizes.fanout_clients} clients)",
            50.0,
            lambda r: r.get("fanout", KORA, "p99_ms"),
            "ms",
        ),
        Target(
            "server memory per idle connection",
            64.0,
            lambda r: r.get("memory", KORA, "per_idle_conn_kib"),
            "KiB",
        ),
    ]


def latency_context(report: Report) -> str | None:
    """What durability alone costs on the A -> B path: three durable commits, and the bare
    relay doing them (A's write, the relay's append, B's apply), beside our p50."""
    parts: list[str] = []
    commits = report.get("latency", FLOOR, "three_commits_ms")
    if commits is not None:
        parts.append(f"three durable commits {commits:.2f} ms")
    durable = report.get("latency", FLOOR, "durable_relay_p50_ms")
    if durable is not None:
        parts.append(f"bare relay with those three commits p50 {durable:.2f} ms")
        ours = report.get("latency", KORA, "p50_ms")
        if ours is not None and durable > 0:
            parts.append(f"kora / that floor {ours / durable:.2f}")
    return "; ".join(parts) or None


def throughput_context(report: Report, per_tx: int = 0) -> str | None:
    """The headline throughput's figures and what bounds them: the CPU floor beside it, and
    the peer writing in transactions of ``per_tx`` (when measured) for comparison."""
    parts: list[str] = []
    for system in (KORA, PEER):
        value = report.get("throughput", system, "ops_per_s")
        if value is not None:
            parts.append(f"{system} {value:,.0f} ops/s")
    batched = report.get(f"throughput_tx{per_tx}", PEER, "ops_per_s")
    if batched is not None:
        parts.append(f"pycrdt in transactions of {per_tx:,}: {batched:,.0f} ops/s")
    pipeline = report.get("throughput", FLOOR, "durable_pipeline_ops_per_s")
    if pipeline is not None:
        parts.append(f"three durable sqlite3 stores with a bare relay {pipeline:,.0f} ops/s")
    floor = report.get("throughput", KORA, "cpu_floor_ops_per_s")
    busiest = report.get("throughput", KORA, "busiest_process_ops_per_s")
    busy = report.get("throughput", KORA, "cpu_busy_pct")
    if floor is not None:
        parts.append(f"kora's CPU floor {floor:,.0f} ops/s ({cpu.cores()} cores / CPU per op)")
    if busiest is not None:
        parts.append(f"one core per process {busiest:,.0f} ops/s")
    if busy is not None:
        parts.append(f"cores busy {busy:.0f}%")
    waited = report.get("throughput", KORA, "runqueue_wait_us_per_op")
    if waited is not None:
        parts.append(f"waited for a core {waited:,.0f} us/op")
    return "; ".join(parts) or None


# ---------------------------------------------------------------------------------- main


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cpus ({model}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


async def run(ctx: Context, selected: list[str]) -> None:
    deadline = trio.current_time() + ctx.sizes.budget_s
    for name in selected:
        left = deadline - trio.current_time()
        if left <= 0:
            ctx.report.note(f"{name}: skipped, the run's time budget is spent")
            continue
        started = time.perf_counter()
        with trio.move_on_after(left) as scope:
            await RUNNERS[name](ctx)
        if scope.cancelled_caught:
            ctx.report.note(f"{name}: cut off by the run's time budget")
        ctx.report.note(f"{name}: {time.perf_counter() - started:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--server-url",
        help="run the client-side scenarios against this running Kora server (ws://HOST:PORT/)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip pycrdt-websocket")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios.split(",") if s and s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {','.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    selected = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    report = Report()
    with_peer = not args.no_peer and peer.available()
    print(f"# {machine()}", flush=True)
    if not args.no_peer and not with_peer:
        report.note("pycrdt-websocket is not installed (the bench extra): peer skipped")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kora-bench-") as name:
        ctx = Context(report, sizes, Path(name), args.server_url, with_peer)
        trio.run(run, ctx, selected)
    print()
    print(report.table())
    print()
    for verdict, text in report.verdicts(targets(sizes)):
        print(f"{verdict:<4} {text}")
    if report.notes:
        print()
        for note in report.notes:
            print(f"note: {note}")
    print(f"\n# total {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
