"""A client whose clock runs ten minutes fast, against the real server over WebSocket.

The server refuses operations stamped more than 60 s ahead of its own time; the client's
store re-stamps its queued operations on the handshake (spec 3.8), so they are accepted
and reach another client.
"""

from __future__ import annotations

import trio

import kora
from kora.core.hlc import system_clock_ms
from kora.core.operation import OpType
from kora.server import MemoryServerStore, ServerLimits, open_server
from kora.store import LocalMutation, open_store
from kora.sync import SyncOptions, open_sync

SCHEMA = kora.define_schema(version=1, collections={"todos": {"title": kora.string()}})
LIMITS = ServerLimits(ping_interval=None, shutdown_timeout=3.0)
TEN_MINUTES = 600_000


def fast_clock() -> int:
    return system_clock_ms() + TEN_MINUTES


async def test_a_fast_client_syncs_through_the_real_server() -> None:
    events: list[tuple[str, dict[str, object]]] = []
    async with (
        MemoryServerStore() as server_store,
        open_server(store=server_store, host="127.0.0.1", port=0, limits=LIMITS) as server,
        open_store(None, physical_clock=fast_clock) as store,
        open_sync(
            store,
            SyncOptions(url=server.url),
            emit=lambda name, payload: events.append((name, dict(payload))),
        ) as engine,
        kora.open_app(SCHEMA, path=None, sync=SyncOptions(url=server.url)) as other,
    ):
        assert other.sync is not None
        for n in range(3):
            await store.write_local(
                LocalMutation(type=OpType.INSERT, collection="todos", data={"title": f"t{n}"})
            )
        await engine.connect()
        await other.sync.connect()
        with trio.fail_after(15):
            await engine.wait_synced()
            while len(await other.collection("todos").all()) < 3:
                await trio.sleep(0.01)
        assert await store.rejected_operations() == []
        await store.write_local(
            LocalMutation(type=OpType.INSERT, collection="todos", data={"title": "live"})
        )
        with trio.fail_after(15):
            await engine.wait_synced()
            while len(await other.collection("todos").all()) < 4:
                await trio.sleep(0.01)
        assert await store.rejected_operations() == []
    (skew,) = [payload for name, payload in events if name == "sync:clock-skew"]
    assert skew["rebased"] is True
    assert skew["operations"] == 3
