"""A TCP fault proxy on 127.0.0.1: real sockets, injected network faults.

Put it between a client and a server (``async with open_fault_proxy(port) as proxy``, then
connect to ``proxy.port``) and change its faults at any moment:

* ``reset_after(n)``: forward ``n`` more bytes (in either direction), then reset every
  connection with a TCP RST, so a reset lands in the middle of a frame;
* ``reset_all()``: reset every connection now;
* ``blackhole()`` / ``heal()``: a half-open link: the connections stay open but nothing
  passes in either direction (bytes already sent wait, as TCP retransmits would) until
  healed;
* ``latency`` and ``jitter`` (seconds): every chunk is delivered that much later, in order;
* ``segment_size``: chunks are re-sent in segments of at most that many bytes, each its own
  ``send`` with Nagle off (``1`` makes a one-byte segment slicer);
* ``bandwidth`` (bytes per second): a throughput cap per direction.

Randomness (jitter) comes from a seeded ``random.Random``.  The proxy binds 127.0.0.1 only.
Each connection's two directions are pumped by a reader and a writer task joined by a
bounded channel (``MAX_CHUNKS_IN_FLIGHT`` chunks: when full, the reader stops reading, so
backpressure reaches the sender as it would on a real link).
"""

from __future__ import annotations

import errno
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

__all__ = ["FaultProxy", "ProxyStats", "open_fault_proxy"]

#: Chunks a direction holds between its reader and its writer (latency needs a queue).
MAX_CHUNKS_IN_FLIGHT: Final = 256
_READ_SIZE: Final = 65536


@attrs.define
class ProxyStats:
    """Counters of what the proxy did (for tests that want to check a fault landed)."""

    connections: int = 0
    bytes_forwarded: int = 0
    segments_sent: int = 0
    resets: int = 0


def _set_reset_on_close(stream: trio.SocketStream) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as exc:
        if exc.errno not in (errno.EBADF, errno.ENOTCONN, errno.EINVAL):
            raise


class _Link:
    """One proxied connection: the client's stream and the upstream stream."""

    def __init__(self, client: trio.SocketStream, upstream: trio.SocketStream) -> None:
        self.client = client
        self.upstream = upstream
        self.cancel_scope = trio.CancelScope()
        self.reset = False

    async def abort(self) -> None:
        """Reset both sides (RST) and stop pumping."""
        if self.reset:
            return
        self.reset = True
        for stream in (self.client, self.upstream):
            _set_reset_on_close(stream)
            await stream.aclose()
        self.cancel_scope.cancel()


class FaultProxy:
    """A running proxy (see the module docstring).  Attributes are the live fault settings.

    Attributes:
        port: The port the proxy listens on (127.0.0.1).
        latency: Seconds added to every chunk.
        jitter: Up to this many seconds added or removed at random (never below zero).
        segment_size: Largest segment forwarded at once (``None``: as received).
        bandwidth: Bytes per second per direction (``None``: unlimited).
        stats: What happened so far.
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", seed: int = 0):
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.latency = 0.0
        self.jitter = 0.0
        self.segment_size: int | None = None
        self.bandwidth: float | None = None
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._links: set[_Link] = set()
        self._open = trio.Event()
        self._open.set()
        self._reset_budget: int | None = None

    # ------------------------------------------------------------ faults

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    def blackhole(self) -> None:
        """Stop everything passing (connections stay open: a half-open link)."""
        if self._open.is_set():
            self._open = trio.Event()

    def heal(self) -> None:
        """End a blackhole: held bytes flow again."""
        self._open.set()

    async def reset_all(self) -> None:
        """Reset every open connection now (TCP RST to both ends)."""
        self._reset_budget = None
        for link in list(self._links):
            await self._reset(link)

    def reset_after(self, forwarded_bytes: int) -> None:
        """Forward ``forwarded_bytes`` more bytes (all directions together), then reset every
        open connection: with a small count the reset lands inside a frame."""
        if forwarded_bytes < 0:
            raise ValueError("forwarded_bytes must not be negative")
        self._reset_budget = forwarded_bytes

    @property
    def connection_count(self) -> int:
        return len(self._links)

    # ------------------------------------------------------------ serving

    async def serve(self, *, task_status: trio.TaskStatus[FaultProxy]) -> None:
        """Accept and proxy connections until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(self.target_host, self.target_port)
        except OSError:
            _set_reset_on_close(client)
            await client.aclose()
            return
        for stream in (client, upstream):
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        link = _Link(client, upstream)
        self._links.add(link)
        self.stats.connections += 1
        try:
            with link.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, link, client, upstream)
                    nursery.start_soon(self._direction, link, upstream, client)
        finally:
            self._links.discard(link)
            if not link.reset:
                for stream in (client, upstream):
                    await stream.aclose()

    async def _direction(
        self, link: _Link, source: trio.SocketStream, sink: trio.SocketStream
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](MAX_CHUNKS_IN_FLIGHT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, link, receive, sink)
            async with send:
                while True:
                    try:
                        chunk = await source.receive_some(_READ_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        chunk = b""
                    if not chunk:
                        break
                    await send.send((trio.current_time() + self._delay(), chunk))
        # The source ended: pass the end on (half-close) unless the link was reset.
        if not link.reset:
            try:
                await sink.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _delay(self) -> float:
        if not self.jitter:
            return self.latency
        return max(0.0, self.latency + self._rng.uniform(-self.jitter, self.jitter))

    async def _write(
        self,
        link: _Link,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
        sink: trio.SocketStream,
    ) -> None:
        async with receive:
            async for deliver_at, chunk in receive:
                await trio.sleep_until(deliver_at)
                await self._open.wait()
                size = self.segment_size or len(chunk)
                for start in range(0, len(chunk), size):
                    segment = chunk[start : start + size]
                    if self._reset_budget is not None:
                        segment = segment[: self._reset_budget]
                        self._reset_budget -= len(segment)
                    if segment:
                        # Counted before the send: a peer that has read the bytes always
                        # finds them counted.
                        self.stats.bytes_forwarded += len(segment)
                        self.stats.segments_sent += 1
                        try:
                            await sink.send_all(segment)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            link.cancel_scope.cancel()
                            return
                        if self.bandwidth:
                            await trio.sleep(len(segment) / self.bandwidth)
                    if self._reset_budget == 0:
                        self._reset_budget = None
                        for other in list(self._links):
                            await self._reset(other)
                        return

    async def _reset(self, link: _Link) -> None:
        self._links.discard(link)
        if not link.reset:
            self.stats.resets += 1
            await link.abort()


@asynccontextmanager
async def open_fault_proxy(
    target_port: int, *, target_host: str = "127.0.0.1", seed: int = 0
) -> AsyncIterator[FaultProxy]:
    """Run a ``FaultProxy`` to ``target_host:target_port`` for the ``async with`` block."""
    proxy = FaultProxy(target_port, target_host=target_host, seed=seed)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
