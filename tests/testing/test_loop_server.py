"""The loop server, chaos transport and partitions with real apps, in virtual time."""

from __future__ import annotations

import trio
import trio.testing

import kora
from kora.server import MemoryServerStore
from kora.testing import ChaosConfig, NetworkLink, chaos_transport, open_loop_server, partition
from kora.testing.replicas import app_store, digest, server_dump, store_dump

SCHEMA = kora.define_schema(
    version=1, collections={"todos": {"title": kora.string(), "done": kora.boolean(default=False)}}
)


def sync_options(factory: object) -> kora.SyncOptions:
    return kora.SyncOptions(url="memory://", transport=factory, reconnect_interval=0.5)  # type: ignore[arg-type]


async def test_two_apps_converge_through_a_partition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with MemoryServerStore() as store, open_loop_server(store) as server:
        link_a, link_b = NetworkLink(server.connect), NetworkLink(server.connect)
        async with (
            kora.open_app(SCHEMA, path=None, sync=sync_options(link_a)) as a,
            kora.open_app(SCHEMA, path=None, sync=sync_options(link_b)) as b,
        ):
            assert a.sync is not None
            assert b.sync is not None
            await a.sync.connect()
            await b.sync.connect()
            todo = await a.collection("todos").insert({"title": "milk"})
            with trio.fail_after(30):
                while await b.collection("todos").get(todo.id) is None:
                    await trio.sleep(0.1)
            with partition(link_a):
                await a.collection("todos").update(todo.id, {"done": True})
                await b.collection("todos").update(todo.id, {"title": "oat milk"})
                await trio.sleep(10)
                assert await a.pending_operations() == 1
            with trio.fail_after(60):
                await a.sync.wait_synced()
                await b.sync.wait_synced()
                while True:
                    dumps = [await store_dump(app_store(app), ["todos"]) for app in (a, b)]
                    if dumps[0] == dumps[1] == await server_dump(store):
                        break
                    await trio.sleep(0.5)
            assert digest(dumps[0]) == digest(dumps[1])
            assert dumps[0]["todos"][todo.id]["fields"] == {
                "title": "oat milk",
                "done": True,
            }
            assert link_a.cuts == 1


async def test_chaos_drops_and_duplicates_still_converge(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with MemoryServerStore() as store, open_loop_server(store) as server:
        config = ChaosConfig(drop_rate=0.1, duplicate_rate=0.1, reorder_rate=0.1, max_delay=0.5)
        chaos_a = chaos_transport(server.connect, config, seed=1)
        chaos_b = chaos_transport(server.connect, config, seed=2)
        async with (
            kora.open_app(SCHEMA, path=None, sync=sync_options(chaos_a)) as a,
            kora.open_app(SCHEMA, path=None, sync=sync_options(chaos_b)) as b,
        ):
            assert a.sync is not None
            assert b.sync is not None
            await a.sync.connect()
            await b.sync.connect()
            for i in range(30):
                await a.collection("todos").insert({"title": f"a{i}"})
                await b.collection("todos").insert({"title": f"b{i}"})
            with trio.fail_after(600):
                while True:
                    dumps = [await store_dump(app_store(app), ["todos"]) for app in (a, b)]
                    if (
                        len(dumps[0].get("todos", {})) == 60
                        and dumps[0] == dumps[1] == await server_dump(store)
                        and await a.pending_operations() == 0
                        and await b.pending_operations() == 0
                    ):
                        break
                    await trio.sleep(1)
        assert chaos_a.stats.faults > 0  # type: ignore[attr-defined]
