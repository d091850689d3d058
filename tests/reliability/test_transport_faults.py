"""B3: the real stack over real sockets, through the TCP fault proxy (PR tier).

Per transport (WebSocket, long-polling): a ``kora serve``-equivalent server on 127.0.0.1,
a fault proxy in front of it, 3 apps on SQLite files writing 300 operations each while the
proxy injects 5 faults (a reset in the middle of a frame, a reset of every connection, a
blackhole/half-open link, added latency with jitter, one-byte segments).  Then the faults
end and the replicas must converge: I1 equal canonical dumps (apps and server), I2 equal
op-id sets holding every committed write, I3 no duplicates, I6 empty queues and no
rejected operations.  ``KORA_B3_SEED`` replays a fault schedule.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

import kora
from kora.server import MemoryServerStore, ServerLimits, open_server
from kora.testing import open_fault_proxy
from kora.testing.fault_proxy import FaultProxy
from kora.testing.replicas import (
    app_store,
    digest,
    server_dump,
    server_operations,
    store_dump,
    store_operations,
)

SCHEMA = kora.define_schema(
    version=1,
    collections={"todos": {"title": kora.string(), "n": kora.integer(default=0)}},
)
APPS = 3
OPERATIONS = 300
#: Pings every 0.5 s and a 2 s idle timeout: the server drops a blackholed peer quickly.
LIMITS = ServerLimits(
    ping_interval=0.5, idle_timeout=2.0, long_poll_hold=1.0, ops_per_minute=0, shutdown_timeout=2.0
)


async def inject(proxy: FaultProxy, rng: random.Random, log: list[str]) -> None:
    """Five faults, one after the other, each chosen and timed by ``rng``."""
    kinds = ["reset-mid-frame", "reset-all", "blackhole", "latency", "one-byte-segments"]
    rng.shuffle(kinds)
    for kind in kinds:
        await trio.sleep(rng.uniform(0.2, 0.6))
        log.append(kind)
        if kind == "reset-mid-frame":
            proxy.reset_after(rng.randint(50, 3000))
        elif kind == "reset-all":
            await proxy.reset_all()
        elif kind == "blackhole":
            proxy.blackhole()
            await trio.sleep(rng.uniform(1.0, 2.5))
            proxy.heal()
        elif kind == "latency":
            proxy.latency, proxy.jitter = 0.05, 0.03
            await trio.sleep(1.0)
            proxy.latency = proxy.jitter = 0.0
        else:
            proxy.segment_size = 1
            await trio.sleep(0.5)
            proxy.segment_size = None


async def write(app: kora.App, rng: random.Random, count: int) -> None:
    mine: list[str] = []
    for i in range(count):
        todos = app.collection("todos")
        if mine and rng.random() < 0.4:
            await todos.update(rng.choice(mine), {"n": i})
        else:
            mine.append((await todos.insert({"title": f"{app.node_id[-6:]}-{i}"})).id)
        if i % 10 == 9:
            await trio.sleep(0.02)  # the app's own pace: writes interleave with the faults


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
async def test_real_transports_converge_through_proxy_faults(
    transport: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("KORA_B3_SEED", random.randrange(2**32)))
    print(f"B3 {transport}: seed {seed} (KORA_B3_SEED={seed} replays the fault schedule)")
    rng = random.Random(seed)
    faults: list[str] = []
    async with (
        MemoryServerStore() as server_store,
        open_server(store=server_store, port=0, limits=LIMITS) as server,
        open_fault_proxy(server.port, seed=rng.getrandbits(32)) as proxy,
    ):
        scheme = "ws" if transport == "websocket" else "http"
        options = kora.SyncOptions(
            url=f"{scheme}://127.0.0.1:{proxy.port}/",
            transport=transport,  # type: ignore[arg-type]
            reconnect_interval=0.05,
            max_reconnect_interval=0.5,
            ack_timeout=3.0,
            connect_timeout=3.0,
            poll_interval=0.02,
        )
        async with (
            kora.open_app(SCHEMA, tmp_path / "a.db", sync=options) as a,
            kora.open_app(SCHEMA, tmp_path / "b.db", sync=options) as b,
            kora.open_app(SCHEMA, tmp_path / "c.db", sync=options) as c,
        ):
            apps = [a, b, c]
            for app in apps:
                assert app.sync is not None
                await app.sync.connect()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(inject, proxy, random.Random(rng.getrandbits(32)), faults)
                for app in apps:
                    nursery.start_soon(write, app, random.Random(rng.getrandbits(32)), OPERATIONS)
            # Every fault is over (the injector finished); the replicas must converge.
            with trio.fail_after(60):
                while True:
                    pending = [await app.pending_operations() for app in apps]
                    dumps = [await store_dump(app_store(app), ["todos"]) for app in apps]
                    if (
                        pending == [0] * APPS
                        and all(d == dumps[0] for d in dumps)
                        and dumps[0] == await server_dump(server_store, ["todos"])
                    ):
                        break
                    await trio.sleep(0.05)
            server_log = await server_operations(server_store)
            server_ids = [op.id for op in server_log]
            assert len(server_ids) == len(set(server_ids)), "I3: duplicates on the server"
            assert len(server_ids) == APPS * OPERATIONS, "I2: lost or unexpected operations"
            expected = digest(dumps[0])
            for app in apps:
                ops = await store_operations(app_store(app))
                assert len(ops) == len({op.id for op in ops}), "I3: duplicates on an app"
                assert {op.id for op in ops} == set(server_ids), "I2: op sets differ"
                assert digest(await store_dump(app_store(app), ["todos"])) == expected, "I1"
                assert await app.rejected_operations() == [], "I6: rejected operations"
    assert len(faults) == 5
    print(
        f"B3 {transport}: {APPS} apps x {OPERATIONS} ops, faults {faults}, "
        f"{proxy.stats.connections} proxied connections, {proxy.stats.resets} resets, "
        f"{proxy.stats.bytes_forwarded} bytes forwarded"
    )
