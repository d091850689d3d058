"""``ChaosTransport``: faults on whole frames around any sync transport (spec 11.1).

It wraps a :class:`kora.sync.Transport` (memory, WebSocket, long-polling) and, per frame,
with a seeded ``random.Random``:

1. **drop predicate** (either direction): ``drop_predicate(frame, direction)`` true drops the
   frame; checked first, it draws no random number, so exact gaps are deterministic;
2. **drop** (either direction) with ``drop_rate``;
3. **reorder** (outgoing): with ``reorder_rate`` a frame is held back; the held frames are
   shuffled (Fisher-Yates) and sent *before* the next frame that is not held, on close, or
   at the latest ``max_hold`` seconds after the first of them was held (``None``: no limit,
   as in the reference, where a held frame with nothing after it waits for the close);
4. **duplicate**: outgoing frames are sent twice, incoming ones delivered twice, with
   ``duplicate_rate``;
5. **delay** (incoming): each frame is delivered ``uniform(0, max_delay)`` seconds late
   (rounded to 1/1024 s), so later frames can overtake it; delayed frames are still delivered when the connection
   closes (so the configured drop rate stays the real one);
6. **close after N frames**: the connection closes after ``close_after`` frames (both
   directions counted), like a network drop in the middle of a conversation.

Draws per outgoing frame: drop, reorder, (shuffle), duplicate; per incoming frame: drop,
delay, duplicate.  All waits use ``trio`` time, so everything works under
``trio.testing.MockClock`` (the ``autojump_clock`` fixture).

Use it as a transport factory: ``SyncOptions(transport=chaos_transport(inner_factory,
ChaosConfig(drop_rate=0.1), seed=42))``.

A predicate that picks frames by their message reads them with :func:`frame_message`: a
connection to our server speaks ``kora-pb1`` (binary frames) once negotiated, JSON before.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from kora.protocol.binary_codec import BinaryCodec
from kora.protocol.json_codec import JsonCodec
from kora.sync.errors import TransportClosed
from kora.sync.transport import Frame, Transport, TransportFactory

__all__ = [
    "ChaosConfig",
    "ChaosStats",
    "ChaosTransport",
    "Direction",
    "chaos_transport",
    "frame_message",
]

_JSON: Final = JsonCodec()
_BINARY: Final = BinaryCodec()


def frame_message(frame: Frame) -> dict[str, Any]:
    """The message of a frame as the JSON object the JSON format carries, whichever format
    carried it: a JSON frame (text, or bytes starting with ``{``) is parsed, a ``kora-pb1``
    frame decoded and written as JSON.  For predicates: ``frame_message(f)["type"]``.

    Raises:
        RemoteProtocolError: If the frame is neither.
    """
    if isinstance(frame, str) or frame[:1] == b"{":
        parsed: dict[str, Any] = json.loads(frame)
        return parsed
    converted: dict[str, Any] = json.loads(_JSON.encode(_BINARY.decode(frame)))
    return converted


class Direction(enum.Enum):
    """Which way a frame travels, seen from the client."""

    OUTGOING = "outgoing"
    INCOMING = "incoming"


def _rate(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class ChaosConfig:
    """The faults of a :class:`ChaosTransport` (see the module docstring).

    Attributes:
        drop_rate: Probability that a frame is dropped, per direction.
        duplicate_rate: Probability that a frame is sent or delivered twice.
        reorder_rate: Probability that an outgoing frame is held back and shuffled.
        max_delay: Incoming frames are delivered up to this many seconds late.
        close_after: Close the connection after this many frames (``None``: never).
        max_hold: Longest time a reordered frame is held back (``None``: until a later
            frame is sent or the connection closes).
        drop_predicate: ``(frame, direction) -> bool``; true drops the frame.
    """

    drop_rate: float = attrs.field(default=0.0, validator=_rate)
    duplicate_rate: float = attrs.field(default=0.0, validator=_rate)
    reorder_rate: float = attrs.field(default=0.0, validator=_rate)
    max_delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    close_after: int | None = attrs.field(default=None)
    max_hold: float | None = None
    drop_predicate: Callable[[Frame, Direction], bool] | None = None


@attrs.define
class ChaosStats:
    """Counts of the faults injected (shared by the connections of one factory)."""

    frames_sent: int = 0
    frames_received: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    closed: int = 0

    @property
    def faults(self) -> int:
        return self.dropped + self.duplicated + self.reordered + self.delayed + self.closed


class ChaosTransport:
    """One connection with faults (made by :func:`chaos_transport`; see the module)."""

    def __init__(
        self,
        inner: Transport,
        config: ChaosConfig | Callable[[], ChaosConfig],
        rng: random.Random,
        stats: ChaosStats,
    ) -> None:
        self._inner = inner
        self._config_source = config
        self._rng = rng
        self.stats = stats
        self._held: list[Frame] = []
        self._held_changed = trio.Event()
        self._send_lock = trio.Lock()
        self._incoming: list[tuple[float, int, Frame]] = []  # (deliver at, order, frame)
        self._order = itertools.count()
        self._arrived = trio.Event()
        self._inner_closed: TransportClosed | None = None
        self._frames = 0
        self._closed = False

    # ------------------------------------------------------------ helpers

    @property
    def _config(self) -> ChaosConfig:
        source = self._config_source
        return source if isinstance(source, ChaosConfig) else source()

    def _drops(self, frame: Frame, direction: Direction) -> bool:
        predicate = self._config.drop_predicate
        if predicate is not None and predicate(frame, direction):
            return True
        return self._config.drop_rate > 0 and self._rng.random() < self._config.drop_rate

    async def _count_frame(self) -> None:
        self._frames += 1
        limit = self._config.close_after
        if limit is not None and self._frames > limit:
            self.stats.closed += 1
            await self.aclose()
            raise TransportClosed(f"chaos: closed after {limit} frames")

    # ------------------------------------------------------------ Transport

    async def send(self, frame: Frame) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("chaos transport closed")
        await self._count_frame()
        self.stats.frames_sent += 1
        if self._drops(frame, Direction.OUTGOING):
            self.stats.dropped += 1
            await trio.lowlevel.checkpoint()
            return
        config = self._config
        if config.reorder_rate > 0 and self._rng.random() < config.reorder_rate:
            self.stats.reordered += 1
            self._held.append(frame)
            self._held_changed.set()
            await trio.lowlevel.checkpoint()
            return
        async with self._send_lock:
            await self._flush_held()
            await self._inner.send(frame)
            if config.duplicate_rate > 0 and self._rng.random() < config.duplicate_rate:
                self.stats.duplicated += 1
                await self._inner.send(frame)

    async def _flush_held(self) -> None:
        if self._held:
            held, self._held = self._held, []
            self._rng.shuffle(held)
            for frame in held:
                await self._inner.send(frame)

    async def release_held(self) -> None:
        """Flush held frames ``max_hold`` seconds after the first was held (a task)."""
        while True:
            await self._held_changed.wait()
            self._held_changed = trio.Event()
            limit = self._config.max_hold
            if not self._held or limit is None:
                continue
            await trio.sleep(limit)
            async with self._send_lock:
                try:
                    await self._flush_held()
                except TransportClosed:
                    return

    async def receive(self) -> Frame:
        while True:
            if self._incoming:
                deliver_at, _, frame = self._incoming[0]
                if deliver_at <= trio.current_time() or self._inner_closed is not None:
                    heapq.heappop(self._incoming)
                    await trio.lowlevel.checkpoint()
                    return frame
                with trio.move_on_at(deliver_at):
                    await self._wait_arrival()
                continue
            if self._inner_closed is not None:
                await trio.lowlevel.checkpoint()
                raise self._inner_closed
            await self._wait_arrival()

    async def _wait_arrival(self) -> None:
        await self._arrived.wait()
        self._arrived = trio.Event()

    async def pump(self) -> None:
        """Read the inner transport forever (run in the factory's nursery)."""
        while True:
            try:
                frame = await self._inner.receive()
            except TransportClosed as closed:
                self._inner_closed = closed
                self._arrived.set()
                return
            # Read at every frame, like ``send`` does: a test that stops the chaos stops it
            # on the connections already open too.
            config = self._config
            self.stats.frames_received += 1
            self._frames += 1
            limit = config.close_after
            if limit is not None and self._frames > limit:
                self.stats.closed += 1
                self._inner_closed = TransportClosed(f"chaos: closed after {limit} frames")
                self._arrived.set()
                await self._inner.aclose()
                return
            if self._drops(frame, Direction.INCOMING):
                self.stats.dropped += 1
                continue
            delay = 0.0
            if config.max_delay > 0:
                # A multiple of 1/1024 s: virtual times stay exact binary fractions, so
                # "start + timeout" deadlines compare exactly under MockClock.
                delay = round(self._rng.uniform(0.0, config.max_delay) * 1024) / 1024
                self.stats.delayed += 1
            copies = 1
            if config.duplicate_rate > 0 and self._rng.random() < config.duplicate_rate:
                self.stats.duplicated += 1
                copies = 2
            for _ in range(copies):
                heapq.heappush(
                    self._incoming, (trio.current_time() + delay, next(self._order), frame)
                )
            self._arrived.set()

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            with trio.CancelScope(shield=True):
                async with self._send_lock:
                    await self._flush_held()
        except TransportClosed:
            pass
        finally:
            await self._inner.aclose()


def chaos_transport(
    inner: TransportFactory,
    config: ChaosConfig | Callable[[], ChaosConfig],
    *,
    seed: int | random.Random = 0,
    stats: ChaosStats | None = None,
) -> TransportFactory:
    """A transport factory whose connections are ``inner``'s wrapped in chaos.

    Args:
        inner: The real transport factory (``MemoryNetwork``, a loop server's
            ``connect``, ...).
        config: The faults, or a callable returning them (read at every frame, so a test
            can change or stop the chaos while connections are open).
        seed: Seed (or generator) of the randomness; every connection draws its own
            generator from it in order, so a run is reproducible.
        stats: Where to count the faults (shared across connections); a new one if omitted.

    Returns:
        The factory; its ``stats`` attribute holds the counters.
    """
    parent = seed if isinstance(seed, random.Random) else random.Random(seed)
    counters = stats if stats is not None else ChaosStats()

    @asynccontextmanager
    async def connect() -> AsyncIterator[Transport]:
        rng = random.Random(parent.getrandbits(64))
        async with inner() as transport, trio.open_nursery() as nursery:
            chaotic = ChaosTransport(transport, config, rng, counters)
            nursery.start_soon(chaotic.pump)
            nursery.start_soon(chaotic.release_held)
            try:
                yield chaotic
            finally:
                nursery.cancel_scope.cancel()
                # Shielded: a Cancelled from the cancelled nursery would replace whatever
                # the body raised, and the nursery would then swallow it.
                with trio.CancelScope(shield=True):
                    await chaotic.aclose()

    factory: Any = connect
    factory.stats = counters
    return factory  # type: ignore[no-any-return]
