"""B4 C1: the client SIGKILL loop, at random moments and at the named kill points K1-K6.

A writer process (forked by ``client_zygote.py``) runs a SQLite store and the sync engine
against a server in this process, and writes transactions of 1-20 operations; it prints
each op id once ``write_local_many`` returned (L-acked).  It dies by SIGKILL, either from
us at a uniform 20-300 ms, or by itself at the n-th hit of a kill point (K1 inside the
write transaction before COMMIT, K2 after COMMIT before the app sees the ids, K3 after
enqueue before send, K4 after send before the ack, K5 after the ack arrives before the
dequeue, K6 inside the dequeue transaction).  After each kill, on the database:

* ``PRAGMA integrity_check`` is ``ok``;
* every L-acked id is in the op log;
* no queue row without its op; every local op is queued, or acknowledged (then the server
  holds it: an ack is only sent after the server's commit);
* every transaction is all or nothing (its ops carry its transaction id), and a K1 kill
  left its transaction absent, a K2 kill left it complete;
* the server holds nothing the writer did not commit locally.

Finally a writer drains its queue: the server holds exactly the node's op log, each once.
``KORA_CLIENT_KILL_SEED`` replays; ``KORA_CLIENT_KILLS`` changes the number of kills.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
import trio
from zygote_harness import Zygote, alive, kill_and_wait, open_zygote, wait_dead

from kora.server import MemoryServerStore, ServerLimits, open_server
from kora.testing.replicas import server_operations

HERE = Path(__file__).resolve().parent
KILLS = int(os.environ.get("KORA_CLIENT_KILLS", "100"))
POINTS = ("K1", "K2", "K3", "K4", "K5", "K6")
OP_ID = re.compile(r"^[0-9a-f]{64}$")


def schedule(rng: random.Random, kills: int) -> list[str]:
    """10 kills per kill point (scaled), the rest at random moments, shuffled."""
    named = [point for point in POINTS for _ in range(max(1, kills // 10))][: kills * 6 // 10]
    plan = named + ["none"] * (kills - len(named))
    rng.shuffle(plan)
    return plan


async def spawn(zygote: Zygote, command: str) -> int:
    await zygote.command(command)
    with trio.fail_after(20):
        while not (line := await zygote.line()).startswith("pid "):
            pass
    return int(line.split()[1])


async def wait_for_line(path: Path, wanted: str, pid: int) -> None:
    with trio.fail_after(20):
        while True:
            if wanted in complete_lines(path):
                return
            if not alive(pid):
                raise AssertionError(f"the writer died before {wanted!r}: {complete_lines(path)}")
            await trio.sleep(0.005)  # polling the child's output file


def complete_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return text.split("\n")[:-1]  # a torn last line was never completely printed


def check_database(
    db: Path,
    node: str,
    acked: set[str],
    transactions: dict[str, int],
    server_ids: set[str],
    point: str,
    last_tx: str | None,
) -> set[str]:
    """The checks of the module docstring; returns the node's op ids."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        local = {
            op_id: tx
            for op_id, tx in conn.execute(
                "SELECT id, transaction_id FROM ops WHERE node_id = ?", (node,)
            )
        }
        queued = {
            row[0]
            for row in conn.execute(
                "SELECT o.id FROM outbound q JOIN ops o ON o.rowid = q.op_rowid"
            )
        }
        (orphans,) = conn.execute(
            "SELECT count(*) FROM outbound q LEFT JOIN ops o ON o.rowid = q.op_rowid "
            "WHERE o.rowid IS NULL"
        ).fetchone()
    conn.close()
    assert orphans == 0, "queue rows without their op"
    lost = acked - local.keys()
    assert not lost, f"{len(lost)} L-acked operations lost"
    unacknowledged_elsewhere = (local.keys() - queued) - server_ids
    assert not unacknowledged_elsewhere, "ops dequeued without being on the server"
    assert not (server_ids - local.keys()), "the server holds ops the writer never committed"
    per_tx = Counter(local.values())
    for tx, count in transactions.items():
        assert per_tx.get(tx, 0) in (0, count), f"transaction {tx} is partly stored"
    if point == "K1" and last_tx is not None:
        assert per_tx.get(last_tx, 0) == 0, "K1: the killed transaction committed"
    if point == "K2" and last_tx is not None:
        assert per_tx.get(last_tx, 0) == transactions[last_tx], "K2: the commit was lost"
    return set(local)


@pytest.mark.timeout(900)
async def test_client_sigkill_loop_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("KORA_CLIENT_KILL_SEED", random.randrange(2**32)))
    print(f"client SIGKILL loop: seed {seed} (KORA_CLIENT_KILL_SEED={seed} replays it)")
    rng = random.Random(seed)
    db = tmp_path / "client.db"
    acked: set[str] = set()
    transactions: dict[str, int] = {}
    node = ""
    fired: Counter[str] = Counter()
    limits = ServerLimits(ping_interval=None, ops_per_minute=0, shutdown_timeout=2.0)
    async with (
        MemoryServerStore() as server_store,
        open_server(store=server_store, port=0, limits=limits) as server,
        open_zygote(HERE / "client_zygote.py", tmp_path) as zygote,
    ):
        for index, point in enumerate(schedule(rng, KILLS)):
            out = tmp_path / f"writer-{index}.out"
            nth = rng.randint(1, 3)
            pid = await spawn(
                zygote, f"spawn {out} {db} {server.url} {point} {nth} {rng.getrandbits(32)}"
            )
            await wait_for_line(out, "ready", pid)
            if point == "none":
                await trio.sleep(rng.uniform(0.02, 0.3))  # a random moment of the run
                await kill_and_wait(pid)
                fired["random"] += 1
            else:
                with trio.move_on_after(5):
                    await wait_dead(pid, within=6)
                if alive(pid):
                    await kill_and_wait(pid)  # the point was not reached in time
                    fired[f"{point} not reached"] += 1
                else:
                    fired[point] += 1
            last_tx = None
            for line in complete_lines(out):
                if line.startswith("node "):
                    node = line.split()[1]
                elif line.startswith("tx "):
                    _, last_tx, count = line.split()
                    transactions[last_tx] = int(count)
                elif OP_ID.match(line):
                    acked.add(line)
            server_ids = {op.id for op in await server_operations(server_store)}
            await trio.to_thread.run_sync(
                check_database, db, node, acked, transactions, server_ids, point, last_tx
            )
        out = tmp_path / "drain.out"
        pid = await spawn(zygote, f"drain {out} {db} {server.url}")
        await wait_for_line(out, "drained 0", pid)
        await wait_dead(pid)
        server_log = await server_operations(server_store)
    mine = [op.id for op in server_log if op.node_id == node]
    local = await trio.to_thread.run_sync(
        check_database, db, node, acked, transactions, set(mine), "none", None
    )
    assert len(mine) == len(set(mine)), "an operation is on the server twice"
    assert set(mine) == local, "the server does not hold exactly the writer's op log"
    print(
        f"client SIGKILL loop: {KILLS} kills ({dict(sorted(fired.items()))}), "
        f"{len(transactions)} transactions, {len(acked)} ops L-acked, {len(local)} committed, "
        f"{len(mine)} on the server, lost 0, duplicated 0, unexpected 0"
    )
    assert sum(fired[p] for p in POINTS) > 0
