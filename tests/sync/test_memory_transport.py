"""MemoryTransport: ordered delivery both ways, closing ends both sides, the network factory."""

from __future__ import annotations

import pytest
import trio

from kora.sync import MemoryNetwork, TransportClosed, memory_transport_pair


async def test_frames_flow_both_ways_in_order() -> None:
    left, right = memory_transport_pair()
    await left.send("a")
    await left.send(b"b")
    await right.send("c")
    assert [await right.receive(), await right.receive()] == ["a", b"b"]
    assert await left.receive() == "c"


async def test_closing_one_end_closes_both_after_the_buffer() -> None:
    left, right = memory_transport_pair()
    await left.send("last")
    await left.aclose()
    assert await right.receive() == "last"
    with pytest.raises(TransportClosed):
        await right.receive()
    with pytest.raises(TransportClosed):
        await right.send("x")
    with pytest.raises(TransportClosed):
        await left.send("x")
    assert left.closed
    assert right.closed


async def test_send_waits_when_the_buffer_is_full() -> None:
    left, right = memory_transport_pair(capacity=1)
    await left.send("1")
    with trio.move_on_after(0.01) as waited:
        await left.send("2")
    assert waited.cancelled_caught
    assert await right.receive() == "1"


def test_capacity_must_be_finite() -> None:
    with pytest.raises(ValueError):
        memory_transport_pair(capacity=-1)


async def test_network_hands_the_peer_to_accept_and_closes_on_exit() -> None:
    network = MemoryNetwork()
    async with network() as client:
        server = await network.accept()
        await client.send("hello")
        assert await server.receive() == "hello"
        assert network.open_connections
    assert not network.open_connections
    with pytest.raises(TransportClosed):
        await server.receive()
    network.refuse_reason = "down"
    with pytest.raises(TransportClosed, match="down"):
        async with network():
            pass
