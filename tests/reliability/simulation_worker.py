"""Runs simulation seeds in a separate process; one JSON line per seed on stdout.

``python simulation_worker.py SEED [SEED ...]``.  Each seed gets its own ``trio.run`` under
``MockClock(autojump_threshold=0)``, with trio's scheduler randomness seeded from the seed;
run it with ``PYTHONHASHSEED=0`` (the battery does) and a seed replays exactly.
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

from simulation import Profile, SimulationFailure, simulate


def run_seed(seed: int) -> dict[str, object]:
    # trio shuffles each batch of runnable tasks with this generator; seeding it makes
    # the schedule a function of the seed (trio._core._run, as of trio 0.27+).
    trio._core._run._r.seed(seed)
    started = time.perf_counter()
    try:
        counts = trio.run(
            simulate, seed, Profile(), clock=trio.testing.MockClock(autojump_threshold=0)
        )
    except SimulationFailure as failure:
        return {"seed": seed, "ok": False, "error": str(failure)}
    except BaseExceptionGroup as group:
        matched, _ = group.split(SimulationFailure)
        if matched is None:
            return {"seed": seed, "ok": False, "error": f"seed {seed}: crashed: {group!r}"}
        first: BaseException = matched
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        return {"seed": seed, "ok": False, "error": str(first)}
    except BaseException as exc:  # a crash is a failure of this seed, reported with it
        return {"seed": seed, "ok": False, "error": f"seed {seed}: crashed: {exc!r}"}
    return {
        "seed": seed,
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
        "wall": round(time.perf_counter() - started, 3),
    }


def main() -> None:
    # A test process that dies (a timeout, a kill) must not leave workers running: stop
    # at the next seed once we are orphaned.  (PR_SET_PDEATHSIG would fire when the
    # *thread* that spawned us ends, and trio spawns processes from a worker thread.)
    parent = os.getppid()
    logging.disable(logging.WARNING)  # chaos makes the engine warn a lot; results say enough
    for seed in map(int, sys.argv[1:]):
        if os.getppid() != parent:
            return
        print(json.dumps(run_seed(seed)), flush=True)


if __name__ == "__main__":
    main()
