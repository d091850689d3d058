"""Findings of the B1 convergence simulation, kept as deterministic regression tests.

* ``ChaosTransport.pump`` read its configuration once, when the connection opened, so a
  connection opened during the chaos went on delaying and duplicating the frames it
  received after the simulation stopped the chaos ("every fault ends" before I8 did not
  hold for them).
* A chaos connection swallowed whatever its ``async with`` body raised: the factory cancelled
  its nursery, then closed the transport with a checkpoint, whose ``Cancelled`` replaced the
  exception and was absorbed by that nursery.  (Because of it, the first finding's test
  passed against the unfixed pump: its failed assertion vanished.)
* The simulation took equal version vectors (and equal dumps, and empty queues) for
  convergence.  A vector is each node's highest sequence number (spec 4.1), so it passes a
  gap: seed 183 stopped waiting while client 3 lacked 21 of node-2's operations (the server
  had stored node-2's next batch first, and delivered it first), whose writes later ones
  had superseded; they arrived 3 s later, after the I2 check had failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from simulation import Profile, SimClient, Simulation  # this folder is on sys.path

from kora.server import MemoryServerStore
from kora.store.memory import open_memory_store
from kora.store.values import LocalMutation
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


async def test_simulation_convergence_waits_for_an_operation_under_the_vector() -> None:
    async with (
        MemoryServerStore() as server_store,
        open_memory_store(node_id="node-a") as a,
        open_memory_store(node_id="node-b") as b,
    ):
        written = [
            await a.write_local(LocalMutation.insert("todos", {"title": "1"}, record_id="r")),
            await a.write_local(LocalMutation.update("todos", "r", {"title": "2"})),
            await a.write_local(LocalMutation.update("todos", "r", {"title": "3"})),
        ]
        await server_store.append_batch(written)
        await a.acknowledge(op.id for op in written)
        # b got a's 1 and 3 (the batch with 2 is still on its way): its vector says a:3.
        await b.apply_remote([written[0], written[2]])
        assert (await b.version_vector()).to_wire() == (await a.version_vector()).to_wire()

        simulation = Simulation(0, Profile(clients=2))
        simulation.server = SimpleNamespace(store=server_store)
        simulation.clients = [
            SimClient(index, store, None, None, None)  # type: ignore[arg-type]
            for index, store in enumerate((a, b))
        ]
        assert not await simulation.converged()  # same vectors and dumps, not the same ops
        await b.apply_remote([written[1]])
        assert await simulation.converged()
