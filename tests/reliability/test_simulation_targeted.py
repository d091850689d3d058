"""B1 targeted deterministic cases, each built with an exact fault (virtual time)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import kora
from kora.server import MemoryServerStore
from kora.testing import ChaosConfig, Direction, open_loop_server, open_test_app, wait_converged
from kora.testing.replicas import app_store, server_operations, store_operations

SCHEMA = kora.define_schema(
    version=1, collections={"counters": {"name": kora.string(), "n": kora.integer(default=0)}}
)


def first_ack_dropper() -> Any:
    dropped: list[str] = []

    def predicate(frame: Any, direction: Direction) -> bool:
        text = frame if isinstance(frame, str) else ""
        if direction is Direction.INCOMING and '"type":"acknowledgment"' in text and not dropped:
            dropped.append(text)
            return True
        return False

    return predicate, dropped


async def test_simulation_targeted_dropped_ack_is_resent_and_stored_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    predicate, dropped = first_ack_dropper()
    async with MemoryServerStore() as store, open_loop_server(store) as server:
        chaos = ChaosConfig(drop_predicate=predicate)
        async with (
            open_test_app(SCHEMA, server, chaos=chaos) as a,
            open_test_app(SCHEMA, server) as b,
        ):
            record = await a.counters.insert({"name": "x"})
            with trio.fail_after(120):
                await wait_converged(a, b)
            assert dropped, "the ack was never dropped"
            assert (await b.counters.get(record.id)) is not None
            log = await server_operations(store)
            local = await store_operations(app_store(a))
            assert [op.id for op in log] == [op.id for op in local]  # resent, stored once


async def test_simulation_targeted_concurrent_increments_add_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        MemoryServerStore() as store,
        open_loop_server(store) as server,
        open_test_app(SCHEMA, server) as a,
        open_test_app(SCHEMA, server) as b,
        open_test_app(SCHEMA, server) as c,
    ):
        record = await a.counters.insert({"name": "hits"})
        with trio.fail_after(60):
            await wait_converged(a, b, c)
        for app in (a, b, c):
            assert app.sync is not None
            await app.sync.disconnect()
        await a.counters.increment(record.id, "n", 5)
        await b.counters.increment(record.id, "n", 3)
        await c.counters.increment(record.id, "n", 2)
        for app in (a, b, c):
            assert app.sync is not None
            await app.sync.connect()
        with trio.fail_after(60):
            await wait_converged(a, b, c)
        for app in (a, b, c):
            assert (await app.counters.get(record.id)).fields["n"] == 10  # type: ignore[union-attr]
