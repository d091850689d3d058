"""B4 C2: the server SIGKILL loop.

A ``kora serve`` process with its SQLite store; 5 raw protocol clients stream operations
(1-20 per batch, one batch in flight each) and log every acknowledgment they receive
(S-acked).  The server is killed with SIGKILL at seeded random moments, checked while it is
down, and restarted on the same port; the clients reconnect and resend their unacknowledged
batch.  After each kill (Jepsen's total-queue taxonomy):

* ``PRAGMA integrity_check`` is ``ok``;
* lost = S-acked - server log = {} (an ack is sent only after its batch committed);
* unexpected = server log - attempted = {};
* duplicated = 0 (one row per content id);
* per node, the stored sequence numbers are exactly 1..max and the version vector equals
  that max (each client has one batch in flight, so its log has no holes);
* recovered (committed, ack lost with the kill, resent, acknowledged as duplicate) is
  allowed and counted.

Set ``KORA_KILL_SEED`` to replay a run; ``KORA_SERVER_KILLS`` changes the number of kills.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import trio
from abuse_harness import batch, handshake, make_op
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url
from zygote_harness import Zygote, kill_and_wait, open_zygote

HERE = Path(__file__).resolve().parent
KILLS = int(os.environ.get("KORA_SERVER_KILLS", "50"))
CLIENTS = 5


async def spawn_server(zygote: Zygote, db: Path, port: int) -> tuple[int, int]:
    """Start ``kora serve``; its pid and port once it listens."""
    await zygote.command(f"spawn {db} {port}")
    pid = port_seen = None
    with trio.fail_after(20):
        while pid is None or port_seen is None:
            line = await zygote.line()
            if line.startswith("pid "):
                pid = int(line.split()[1])
            elif "connect to ws://" in line:
                port_seen = int(line.rsplit(":", 1)[1].strip("/"))
    return pid, port_seen


@attrs.define
class Ledger:
    """What the clients attempted and what the server acknowledged."""

    attempted: dict[str, tuple[str, int]] = attrs.field(factory=dict)
    acked: set[str] = attrs.field(factory=set)
    resent_batches: int = 0
    acks: int = 0
    progress: trio.Event = attrs.field(factory=trio.Event)

    def record_ack(self, ids: list[str]) -> None:
        self.acked.update(ids)
        self.acks += 1
        self.progress.set()
        self.progress = trio.Event()


async def stream_client(
    name: str, url_box: list[str], ledger: Ledger, rng: random.Random, stop: trio.Event
) -> None:
    """Write batches forever (one in flight), reconnecting and resending after a kill."""
    seq = 0
    pending: list[Any] | None = None
    watermark = 0
    while not stop.is_set():
        try:
            async with open_websocket_url(
                url_box[0], connect_timeout=2, disconnect_timeout=0.5
            ) as ws:
                await ws.send_message(json.dumps(handshake(name, last_delivery_sequence=watermark)))
                while not stop.is_set():
                    if pending is None:
                        pending = []
                        for _ in range(rng.randint(1, 20)):
                            seq += 1
                            op = make_op(
                                name, seq, data={"n": seq, "pad": "x" * rng.randint(0, 200)}
                            )
                            ledger.attempted[op.id] = (name, seq)
                            pending.append(op)
                    else:
                        ledger.resent_batches += 1
                    await ws.send_message(batch(pending))
                    while True:
                        message = json.loads(await ws.get_message())
                        kind = message["type"]
                        if kind == "operation-batch" and "maxDeliverySequence" in message:
                            if message["baseDeliverySequence"] == watermark:
                                watermark = message["maxDeliverySequence"]
                            await ws.send_message(
                                json.dumps(
                                    {
                                        "type": "acknowledgment",
                                        "messageId": f"a-{name}-{watermark}",
                                        "acknowledgedMessageId": message["messageId"],
                                        "lastSequenceNumber": 0,
                                        "deliverySequence": watermark,
                                    }
                                )
                            )
                        elif kind == "acknowledgment":
                            ledger.record_ack([op.id for op in pending])
                            pending = None
                            break
                        elif kind in ("error", "operation-rejected"):
                            raise AssertionError(f"{name}: unexpected {message}")
        except (
            ConnectionClosed,
            HandshakeError,
            OSError,
            trio.TooSlowError,
            trio.BrokenResourceError,
        ):
            await trio.sleep(0.01)  # the server is down: retry soon


def check_database(db: Path, ledger: Ledger) -> tuple[int, set[str]]:
    """The total-queue checks on the stopped server's database; the number of operations
    stored, and those stored but not (yet) acknowledged: indeterminate for the client."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute("SELECT id, node_id, sequence_number FROM kora_operations").fetchall()
        vector = dict(conn.execute("SELECT node_id, max_sequence_number FROM kora_version_vector"))
    conn.close()
    ids = [row[0] for row in rows]
    stored = set(ids)
    assert len(ids) == len(stored), "duplicated operations"
    lost = ledger.acked - stored
    assert not lost, f"lost {len(lost)} acknowledged operations"
    unexpected = stored - ledger.attempted.keys()
    assert not unexpected, f"{len(unexpected)} operations nobody attempted"
    per_node: dict[str, set[int]] = {}
    for _, node, seq in rows:
        per_node.setdefault(node, set()).add(seq)
    for node, seqs in per_node.items():
        assert seqs == set(range(1, max(seqs) + 1)), f"{node} has holes in its log"
        assert vector[node] == max(seqs)
    return len(stored), stored - ledger.acked


async def test_server_sigkill_loop_loses_no_acknowledged_operation(tmp_path: Path) -> None:
    seed = int(os.environ.get("KORA_KILL_SEED", random.randrange(2**32)))
    print(f"server SIGKILL loop: seed {seed} (KORA_KILL_SEED={seed} replays it)")
    rng = random.Random(seed)
    db = tmp_path / "server.db"
    ledger = Ledger()
    stop = trio.Event()
    indeterminate: set[str] = set()
    async with (
        open_zygote(HERE / "server_zygote.py", tmp_path) as zygote,
        trio.open_nursery() as nursery,
    ):
        pid, port = await spawn_server(zygote, db, 0)
        url_box = [f"ws://127.0.0.1:{port}/"]
        for index in range(CLIENTS):
            client_rng = random.Random(rng.getrandbits(64))
            nursery.start_soon(stream_client, f"client-{index}", url_box, ledger, client_rng, stop)
        for kill in range(KILLS):
            with trio.fail_after(20):
                start = ledger.acks
                while ledger.acks < start + 1:  # the restarted server is taking writes
                    await ledger.progress.wait()
            await trio.sleep(rng.uniform(0.02, 0.3))  # a random moment of the stream
            await kill_and_wait(pid)
            _, unacked = await trio.to_thread.run_sync(check_database, db, ledger)
            indeterminate |= unacked
            if kill + 1 < KILLS:
                pid, _ = await spawn_server(zygote, db, port)
        # The end: one more server, every client's last batch acknowledged, then stop.
        pid, _ = await spawn_server(zygote, db, port)
        with trio.fail_after(20):
            start = ledger.acks
            while ledger.acks < start + 2 * CLIENTS:
                await ledger.progress.wait()
        stop.set()
        nursery.cancel_scope.cancel()
    await kill_and_wait(pid)
    stored, _ = check_database(db, ledger)
    recovered = indeterminate & ledger.acked  # resent after the kill, acknowledged as duplicates
    print(
        f"server SIGKILL loop: {KILLS} kills, {len(ledger.attempted)} ops attempted, "
        f"{len(ledger.acked)} acked, {stored} stored, lost 0, unexpected 0, duplicated 0, "
        f"recovered {len(recovered)} (committed, ack lost, resent), {ledger.resent_batches} batches resent"
    )
    assert KILLS == 0 or ledger.resent_batches > 0  # the kills did land mid-stream
