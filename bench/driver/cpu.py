"""CPU seconds spent by the server process and by the bench process during a timed section.

Wall-clock figures on a shared 2-core machine say little about *why* a figure is what it
is.  CPU time per operation does: the server child is read from ``/proc/<pid>/stat`` (user
+ system, all threads; 10 ms ticks, so only sections of a second or more are meaningful),
the bench process (the clients: apps A and B, or the peer's docs, with their store threads)
from ``time.process_time()``.

From the two, :func:`emit_cpu` derives what the processes could reach if nothing ever
waited (no fsync, no network round trip, no idle pipeline stage):

* ``cpu_floor_ops_per_s``: the machine's cores divided by the CPU seconds per operation of
  both processes together (both kept busy on every core);
* ``busiest_process_ops_per_s``: one core per process (a Python process's own work is
  mostly serialised by the GIL), so the busier process bounds the pipeline.

``cpu_busy_pct`` says how much of the cores the section used: close to 100% means the figure
is bound by CPU, far below means it waits: on the disk, the network, a stage that idles, or a
core that other processes hold.  ``runqueue_wait_us_per_op`` tells the last apart: the time
the threads of both processes were ready to run but had no core (``/proc/<pid>/task/*/
schedstat``; on a shared machine it is other people's load, and on 2 cores also each other).
"""

from __future__ import annotations

import os
import time

import attrs

from bench.driver.procs import Child, cpu_seconds, run_delay_seconds
from bench.driver.report import Report


def cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@attrs.frozen
class CpuSpent:
    """CPU seconds of one timed section; ``server`` is None when the server is not ours."""

    server: float | None
    clients: float
    wall: float
    #: Run-queue delay of both processes' threads; None when either is unknown.
    waited: float | None = None


class CpuMeter:
    """``start()`` ... ``stop()``: the CPU both sides spent in between."""

    def __init__(self, child: Child | None) -> None:
        self._child = child
        self._server0: float | None = None
        self._clients0 = 0.0
        self._wall0 = 0.0
        self._waited0: float | None = None

    def _waited(self) -> float | None:
        if self._child is None:
            return None
        server, clients = run_delay_seconds(self._child.pid), run_delay_seconds(os.getpid())
        return None if server is None or clients is None else server + clients

    def start(self) -> None:
        self._server0 = None if self._child is None else cpu_seconds(self._child.pid)
        self._waited0 = self._waited()
        self._clients0 = time.process_time()
        self._wall0 = time.perf_counter()

    def stop(self) -> CpuSpent:
        wall = time.perf_counter() - self._wall0
        clients = time.process_time() - self._clients0
        server: float | None = None
        if self._child is not None and self._server0 is not None:
            now = cpu_seconds(self._child.pid)
            if now is not None:
                server = now - self._server0
        waited, waited0 = self._waited(), self._waited0
        delay = None if waited is None or waited0 is None else max(0.0, waited - waited0)
        return CpuSpent(server, clients, wall, delay)


def emit_cpu(
    report: Report,
    scenario: str,
    system: str,
    spent: CpuSpent,
    ops: int,
    *,
    clients: bool = True,
    floors: bool = False,
) -> None:
    """Per-operation CPU microseconds of the server (and of the clients), and with
    ``floors`` the CPU-bound rates of the section (see the module's docstring)."""
    if ops <= 0:
        return
    if spent.server is not None:
        report.emit(scenario, system, "server_cpu_us_per_op", 1e6 * spent.server / ops, "us")
    if clients:
        report.emit(scenario, system, "clients_cpu_us_per_op", 1e6 * spent.clients / ops, "us")
    if spent.waited is not None:
        report.emit(scenario, system, "runqueue_wait_us_per_op", 1e6 * spent.waited / ops, "us")
    if not floors or spent.server is None:
        return
    total = spent.server + spent.clients
    busiest = max(spent.server, spent.clients)
    if total > 0:
        report.emit(scenario, system, "cpu_floor_ops_per_s", cores() * ops / total, "ops/s")
    if busiest > 0:
        report.emit(scenario, system, "busiest_process_ops_per_s", ops / busiest, "ops/s")
    if spent.wall > 0:
        report.emit(scenario, system, "cpu_busy_pct", 100 * total / (cores() * spent.wall), "%")
