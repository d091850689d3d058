"""Findings of the B1 convergence simulation, kept as deterministic regression tests.

* ``ChaosTransport.pump`` read its configuration once, when the connection opened, so a
  connection opened during the chaos went on delaying and duplicating the frames it
  received after the simulation stopped the chaos ("every fault ends" before I8 did not
  hold for them).
* A chaos connection swallowed whatever its ``async with`` body raised: the factory cancelled
  its nursery, then closed the transport with a checkpoint, whose ``Cancelled`` replaced the
  exception and was absorbed by that nursery.  Its own regression test above would pass
  against the first bug because of this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from kora.sync.memory import MemoryTransport, memory_transport_pair
from kora.sync.transport import Transport
from kora.testing import ChaosConfig, chaos_transport


@asynccontextmanager
async def memory_connect(server_ends: list[MemoryTransport]) -> AsyncIterator[Transport]:
    client, server = memory_transport_pair()
    server_ends.append(server)
    yield client


async def test_chaos_connection_lets_the_body_s_exception_through() -> None:
    factory = chaos_transport(lambda: memory_connect([]), ChaosConfig(duplicate_rate=0.5))
    with pytest.RaisesGroup(
        pytest.RaisesExc(KeyError, match="from the body"), flatten_subgroups=True
    ):
        async with factory():
            raise KeyError("from the body")


async def test_chaos_stopped_stops_on_open_connections_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ChaosConfig(duplicate_rate=1.0, max_delay=2.0)
    server_ends: list[MemoryTransport] = []
    factory = chaos_transport(lambda: memory_connect(server_ends), lambda: config, seed=7)
    async with factory() as transport:
        (server,) = server_ends
        await server.send("during the chaos")
        received = [await transport.receive(), await transport.receive()]
        assert received == ["during the chaos"] * 2  # duplicated (and delayed)
        config = ChaosConfig()  # the chaos stops; the connection stays open
        await server.send("after")
        await server.send("the chaos")
        sent_at = trio.current_time()
        received = [await transport.receive(), await transport.receive()]
        assert received == ["after", "the chaos"]  # once each, in order
        assert trio.current_time() == sent_at  # at once
        with trio.move_on_after(10):
            extra = await transport.receive()
            raise AssertionError(f"a frame came twice: {extra!r}")
