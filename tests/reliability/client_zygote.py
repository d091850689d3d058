"""Forks client writer processes for the client SIGKILL loop (B4 C1).

Importing kora's store and sync engine takes about a second; the loop starts 100 writers.
This script imports them once and forks a writer per command read from stdin::

    spawn OUT DB URL POINT NTH SEED       (POINT: none or K1..K6; NTH: which hit kills)
    drain OUT DB URL                      (sync until the queue is empty, then exit 0)

The parent answers ``pid <n>``; children write their lines to the file OUT (only complete
lines count).  A writer opens the SQLite store, runs the sync engine against URL and
writes transactions of 1-20 operations (50 B - 50 KiB each).  Before a transaction it
writes ``tx <id> <count>``; after ``write_local_many`` returned, one line per op id: those
are locally committed ("L-acked").

Kill points (the writer SIGKILLs itself at the NTH hit of POINT), all outside product code:

* K1 inside a local-write transaction, just before its COMMIT;
* K2 after that COMMIT, before the ids reach the app (before they are printed);
* K3 after enqueue, before send (a batch frame is about to be sent);
* K4 after send, before the acknowledgment;
* K5 after the acknowledgment arrived, before the engine sees it (before the dequeue);
* K6 inside the dequeue transaction, just before its COMMIT.

K1 and K6 wrap the store's sqlite3 connection (``SQLiteStore._conn``: a test-only proxy
that recognises the transaction by its statements); K3-K5 wrap the transport.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from kora.store import LocalMutation, open_sqlite_store
from kora.sync import SyncOptions, open_sync
from kora.sync.transport import Frame, Transport
from kora.sync.websocket import open_websocket_transport
from kora.testing import frame_message

#: Operation body sizes, 50 B to 50 KiB, mostly small (the database stays small).
SIZES = (50, 200, 1000, 5000, 50 * 1024)
SIZE_WEIGHTS = (30, 30, 25, 13, 2)


class KillSwitch:
    def __init__(self, point: str, nth: int) -> None:
        self.point = point
        self.nth = nth
        self.hits = 0

    def hit(self, point: str) -> None:
        if point == self.point:
            self.hits += 1
            if self.hits >= self.nth:
                os.kill(os.getpid(), signal.SIGKILL)


class ConnectionProxy:
    """Forwards to a sqlite3 connection; fires K1/K6 before the COMMIT they belong to."""

    def __init__(self, conn: Any, switch: KillSwitch) -> None:
        self._conn = conn
        self._switch = switch
        self._kind: str | None = None

    def _watch(self, sql: str) -> None:
        text = sql.lstrip().upper()
        if text.startswith("BEGIN"):
            self._kind = None
        elif "INSERT INTO OUTBOUND" in text:
            self._kind = "K1"
        elif "DELETE FROM OUTBOUND" in text:
            self._kind = "K6"
        elif text.startswith("COMMIT") and self._kind is not None:
            self._switch.hit(self._kind)

    def execute(self, sql: str, *args: Any) -> Any:
        self._watch(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._watch(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class KillTransport:
    """Fires K3 before a batch is sent, K4 after, K5 when an acknowledgment arrives."""

    def __init__(self, inner: Transport, switch: KillSwitch) -> None:
        self._inner = inner
        self._switch = switch

    async def send(self, frame: Frame) -> None:
        batch = frame_message(frame)["type"] == "operation-batch"
        if batch:
            self._switch.hit("K3")
        await self._inner.send(frame)
        if batch:
            self._switch.hit("K4")

    async def receive(self) -> Frame:
        frame = await self._inner.receive()
        if frame_message(frame)["type"] == "acknowledgment":
            self._switch.hit("K5")
        return frame

    async def aclose(self) -> None:
        await self._inner.aclose()


def options(url: str, switch: KillSwitch) -> SyncOptions:
    @asynccontextmanager
    async def connect() -> AsyncIterator[Transport]:
        async with open_websocket_transport(url, connect_timeout=5.0) as transport:
            yield KillTransport(transport, switch)

    return SyncOptions(
        url=url,
        transport=connect,
        reconnect_interval=0.05,
        max_reconnect_interval=0.2,
        batch_size=20,
    )


def emit(out: Any, text: str) -> None:
    out.write(text)
    out.flush()


async def write_forever(out: Any, db: str, url: str, switch: KillSwitch, seed: int) -> None:
    rng = random.Random(seed)
    async with open_sqlite_store(db) as store:
        store._conn = ConnectionProxy(store._conn, switch)  # type: ignore[attr-defined]
        async with open_sync(store, options(url, switch)) as engine:
            await engine.connect()
            emit(out, f"node {store.node_id}\nready\n")
            for tx in range(10**9):
                sizes = rng.choices(SIZES, weights=SIZE_WEIGHTS, k=rng.randint(1, 20))
                mutations = [
                    LocalMutation.insert("items", {"body": "x" * size, "tx": tx}) for size in sizes
                ]
                tx_id = f"tx-{seed}-{tx}"
                emit(out, f"tx {tx_id} {len(mutations)}\n")
                ops = await store.write_local_many(mutations, transaction_id=tx_id)
                switch.hit("K2")
                emit(out, "".join(f"{op.id}\n" for op in ops))
                await trio.sleep(rng.uniform(0, 0.01))


async def drain(out: Any, db: str, url: str) -> None:
    async with open_sqlite_store(db) as store:
        switch = KillSwitch("none", 1)
        async with open_sync(store, options(url, switch)) as engine:
            await engine.connect()
            with trio.fail_after(60):
                await engine.wait_synced()
        emit(out, f"drained {await store.pending_count()}\n")


def child(command: str, args: list[str]) -> None:
    out_path, db, url, *rest = args
    with open(out_path, "w", encoding="utf-8") as out:
        if command == "spawn":
            point, nth, seed = rest
            trio.run(partial(write_forever, out, db, url, KillSwitch(point, int(nth)), int(seed)))
        else:
            trio.run(drain, out, db, url)


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        command, *args = line.split()
        if command not in ("spawn", "drain"):
            continue
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setpgid(0, 0)
            code = 0
            try:
                child(command, args)
            except BaseException as exc:  # reported to the parent through the exit code
                print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        print(f"pid {pid}", flush=True)


if __name__ == "__main__":
    main()
