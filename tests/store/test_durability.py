"""SIGKILL durability (reliability.md B4, C1): every locally committed op survives a kill.

A child process writes local operations in a loop and prints each id after the write call
returned; the parent kills it with SIGKILL at a random moment, reopens the database and
checks that every printed id is in the operation log and still queued, that the queue and
the log agree, and that ``PRAGMA integrity_check`` is ok.  Seed: ``KORA_SEED`` or random
(printed); kills: ``KORA_KILLS`` (default 20).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import trio

from kora.store import open_sqlite_store

WRITER = Path(__file__).with_name("sigkill_writer.py")


def run_and_kill(db: Path, seed: int, delay: float) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    first = child.stdout.readline()
    if first != "ready\n":
        child.kill()
        _, err = child.communicate()
        raise AssertionError(f"writer did not start: {first!r} {err}")
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL
    # Only complete lines were printed after a committed write; a torn last line was not.
    return [line for line in out.split("\n")[:-1] if line]


def check(db: Path, acked: set[str]) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in conn.execute("SELECT id FROM ops")}
        queued = {
            row[0]
            for row in conn.execute(
                "SELECT o.id FROM outbound q JOIN ops o ON o.rowid = q.op_rowid"
            )
        }
        (orphans,) = conn.execute(
            "SELECT count(*) FROM outbound WHERE op_rowid NOT IN (SELECT rowid FROM ops)"
        ).fetchone()
        (vv,) = conn.execute("SELECT coalesce(max(sequence), 0) FROM version_vector").fetchone()
        (seqs,) = conn.execute("SELECT count(*) FROM ops").fetchone()
    finally:
        conn.close()
    missing = acked - stored
    assert not missing, f"{len(missing)} locally committed ops lost"
    assert queued == stored, "every local op stays queued until acknowledged"
    assert orphans == 0
    assert vv == seqs, "the version vector matches the log (no burned or lost sequence numbers)"


def test_sigkill_loses_no_committed_write(tmp_path: Path) -> None:
    seed = int(os.environ.get("KORA_SEED", random.randrange(2**32)))
    kills = int(os.environ.get("KORA_KILLS", "20"))
    print(f"sigkill durability: seed={seed} kills={kills}")
    rng = random.Random(seed)
    db = tmp_path / "client.db"
    acked: set[str] = set()
    for kill in range(kills):
        printed = run_and_kill(db, rng.randrange(2**32), rng.uniform(0.02, 0.3))
        acked.update(printed)
        check(db, acked)
        print(f"kill {kill}: {len(printed)} new ids, {len(acked)} total")
    assert acked, "the writer never committed anything"

    async def reopen() -> None:
        async with open_sqlite_store(str(db)) as store:
            pending = {op.id for op in await store.pending()}
            assert acked <= pending
            assert await store.pending_count() == len(pending)

    trio.run(reopen)
    print(
        f"sigkill durability: {kills} kills, {len(acked)} printed ids all stored and queued, "
        "integrity_check ok after each kill, lost 0"
    )
