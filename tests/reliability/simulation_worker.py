"""Runs simulation seeds in a separate process; one JSON line per seed on stdout.

``python simulation_worker.py SEED [SEED ...]``.  Each seed gets its own ``trio.run`` under
``MockClock(autojump_threshold=0)`` inside ``simulation.deterministic(seed)``, so a seed
replays exactly, whatever ran before it in the process: each line carries the hash of the
run's trace (``simulation.Trace``), which two runs of a seed must share.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simulation import Profile, SimulationFailure, Trace, deterministic, simulate


def _error(seed: int, exc: BaseException) -> str:
    if isinstance(exc, SimulationFailure):
        return str(exc)
    if isinstance(exc, BaseExceptionGroup):
        matched, _ = exc.split(SimulationFailure)
        if matched is not None:
            first: BaseException = matched
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return str(first)
    return f"seed {seed}: crashed: {exc!r}"  # a crash is a failure of this seed


def run_seed(seed: int, trace_to: Path | None = None) -> dict[str, object]:
    """Run one seed; its result line (``trace_to``: also write the trace's lines there)."""
    started, cpu = time.perf_counter(), time.process_time()
    trace = Trace(keep_lines=trace_to is not None)
    result: dict[str, object] = {"seed": seed}
    try:
        with deterministic(seed):
            counts = trio.run(
                simulate, seed, Profile(), trace, clock=trio.testing.MockClock(autojump_threshold=0)
            )
    except BaseException as exc:
        result |= {"ok": False, "error": _error(seed, exc)}
    else:
        result |= {
            "ok": True,
            "counts": {
                "operations": counts.operations,
                "partitions": counts.partitions,
                "client_restarts": counts.client_restarts,
                "server_restarts": counts.server_restarts,
                "swizzles": counts.swizzles,
                "chaos_faults": counts.chaos_faults,
                "converge_seconds": counts.converge_seconds,
            },
        }
    if trace_to is not None and trace.lines is not None:
        trace_to.write_text("\n".join(trace.lines) + "\n", encoding="utf-8")
    return result | {
        "trace": trace.hexdigest(),
        "wall": round(time.perf_counter() - started, 3),
        "cpu": round(time.process_time() - cpu, 3),
    }


def main() -> None:
    # A test process that dies (a timeout, a kill) must not leave workers running: stop
    # at the next seed once we are orphaned.  (PR_SET_PDEATHSIG would fire when the
    # *thread* that spawned us ends, and trio spawns processes from a worker thread.)
    parent = os.getppid()
    logging.disable(logging.WARNING)  # chaos makes the engine warn a lot; results say enough
    # KORA_SIM_TRACE_DIR: write each seed's trace, line by line, to DIR/SEED.trace (to find
    # where two runs of a seed part ways: diff the files).
    trace_dir = os.environ.get("KORA_SIM_TRACE_DIR")
    for seed in map(int, sys.argv[1:]):
        if os.getppid() != parent:
            return
        trace_to = Path(trace_dir) / f"{seed}.trace" if trace_dir else None
        print(json.dumps(run_seed(seed, trace_to)), flush=True)


if __name__ == "__main__":
    main()
