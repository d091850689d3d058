"""A server that starts on a store which already holds operations knows it before the first
client can connect: the hub's window must never answer "end of the log" for a store it has
not heard of (a client connecting in that moment was told it was synced)."""

from __future__ import annotations

import trio

from kora.server import MemoryServerStore, open_server
from tests.server.test_server_session import make_op


class SlowFollowerStore(MemoryServerStore):
    """Reports no commits to the hub's follower: as if it had not run yet."""

    async def wait_for_new(self, after: int) -> int:
        await trio.sleep_forever()
        raise AssertionError("not reached")


async def test_the_hub_knows_the_stores_maximum_before_the_server_listens() -> None:
    async with SlowFollowerStore() as store:
        await store.append_batch([make_op("node-a", seq) for seq in range(1, 6)])
        async with open_server(store=store, host="127.0.0.1", port=0) as server:
            hub = server.context.hub
            assert hub.max_delivery_sequence == 5
            # A caught-up reading from memory is refused: the session reads the store.
            assert hub.read_recent(0, 100) is None
