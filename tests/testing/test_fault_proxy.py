"""The TCP fault proxy itself, with raw sockets (no sync engine needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

from kora.testing.fault_proxy import FaultProxy, open_fault_proxy

WAIT = 5.0


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass


async def firehose(stream: trio.SocketStream) -> None:
    """Sends 1 MB as soon as a client connects."""
    async with stream:
        try:
            await stream.send_all(bytes(range(256)) * 4096)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@asynccontextmanager
async def serving(handler: object) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def proxied(handler: object) -> AsyncIterator[FaultProxy]:
    async with serving(handler) as port, open_fault_proxy(port, seed=7) as proxy:
        yield proxy


async def read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    with trio.fail_after(WAIT):
        while len(data) < size:
            chunk = await stream.receive_some(size - len(data))
            assert chunk, "closed early"
            data += chunk
    return data


async def test_bytes_pass_through_unchanged() -> None:
    async with proxied(echo) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            payload = bytes(range(256)) * 100
            await stream.send_all(payload)
            assert await read_exactly(stream, len(payload)) == payload
        assert proxy.stats.connections == 1
        assert proxy.stats.bytes_forwarded == 2 * len(payload)


async def test_one_byte_segments_deliver_the_same_bytes() -> None:
    async with proxied(echo) as proxy:
        proxy.segment_size = 1
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            payload = b"hello, segmented world" * 20
            await stream.send_all(payload)
            assert await read_exactly(stream, len(payload)) == payload
        assert proxy.stats.segments_sent == 2 * len(payload)


async def test_latency_delays_every_chunk_in_order() -> None:
    async with proxied(echo) as proxy:
        proxy.latency = 0.05
        proxy.jitter = 0.04
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            started = trio.current_time()
            for index in range(20):
                await stream.send_all(b"%03d" % index)
            received = await read_exactly(stream, 60)
            # A lower bound only: the round trip crosses the proxy twice.
            assert trio.current_time() - started >= 2 * (0.05 - 0.04)
        assert received == b"".join(b"%03d" % i for i in range(20))


async def test_blackhole_holds_bytes_until_healed() -> None:
    async with proxied(echo) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(b"before")
            assert await read_exactly(stream, 6) == b"before"
            proxy.blackhole()
            await stream.send_all(b"during")
            with trio.move_on_after(0.2) as silent:
                await stream.receive_some(100)
            assert silent.cancelled_caught, "bytes crossed a blackholed link"
            assert proxy.connection_count == 1  # half-open: nobody was told
            proxy.heal()
            assert await read_exactly(stream, 6) == b"during"


async def test_reset_after_lands_mid_stream_with_an_rst() -> None:
    async with proxied(firehose) as proxy:
        proxy.reset_after(1000)
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        received = b""
        reset = False
        with trio.fail_after(WAIT):
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                reset = True  # ECONNRESET: a reset, not an orderly end
        await stream.aclose()
        assert reset
        assert received == (bytes(range(256)) * 4)[:1000]
        assert proxy.stats.resets == 1
        assert proxy.connection_count == 0


async def test_reset_all_cuts_every_connection_and_new_ones_work() -> None:
    async with proxied(echo) as proxy:
        first = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        second = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        for stream in (first, second):
            await stream.send_all(b"x")
            assert await read_exactly(stream, 1) == b"x"
        await proxy.reset_all()
        for stream in (first, second):
            with trio.fail_after(WAIT):
                try:
                    assert await stream.receive_some(10) == b""
                except trio.BrokenResourceError:
                    pass
            await stream.aclose()
        third = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with third:
            await third.send_all(b"again")
            assert await read_exactly(third, 5) == b"again"
        assert proxy.stats.resets == 2


async def test_bandwidth_cap_still_delivers_everything() -> None:
    async with proxied(echo) as proxy:
        proxy.bandwidth = 200_000
        proxy.segment_size = 1000
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            payload = b"b" * 20_000
            started = trio.current_time()
            await stream.send_all(payload)
            assert await read_exactly(stream, len(payload)) == payload
            assert trio.current_time() - started >= 0.9 * 2 * len(payload) / 200_000 / 2


async def test_an_unreachable_target_resets_the_client() -> None:
    async with serving(echo) as port:
        pass  # closed again: nothing listens on ``port`` now
    async with open_fault_proxy(port) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        with trio.fail_after(WAIT):
            try:
                assert await stream.receive_some(10) == b""
            except trio.BrokenResourceError:
                pass
        await stream.aclose()
