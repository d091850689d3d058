"""Diagnostics measured for real, and the actor that keeps them.

Every figure comes from something that happened on a connection (spec 6 lists what the
reference computes but never feeds; here every input is wired):

* **rtt**: for each of our batches, the time from handing its frame to the transport to
  receiving its acknowledgment, in milliseconds.  ``rtt_ms`` is the latest sample,
  ``rtt_p95_ms`` the 95th percentile over the last ``RTT_WINDOW`` samples, by nearest rank
  (``sorted[ceil(0.95 * n) - 1]``).
* **effective bandwidth** (bytes/s): for each acknowledged batch, its frame's bytes divided
  by its round trip; the estimate is the reference's weighted mean of the last
  ``BANDWIDTH_WINDOW`` samples (weight 1 for the newest, x0.9 per step older), None with
  fewer than two samples.
* **counters**: operations and bytes sent and received (every frame counts, handshakes and
  acknowledgments included, in bytes on the wire), frames, connection attempts, reconnects
  (successful handshakes after the first), the current connection's uptime.

``DiagnosticsActor`` receives :data:`MetricEvent` values on a bounded channel and updates a
:class:`DiagnosticsRecorder`; producers use a blocking ``send`` (the actor does constant work
per event and never awaits I/O, so the wait is short, and no sample is ever dropped: the
counters are exact).  The actor takes events in bursts: after the first event it lets the
others gather for ``SETTLE`` seconds and then takes everything that is there, so one update
(whose send, frames and acknowledgment post several events a few hops apart) wakes it about
once instead of once per event; a query is answered at most ``SETTLE`` later.  After a
burst that filled a quarter of the mailbox, the actor takes events without the pause for
``BUSY_HOLD`` seconds (extended while events keep queueing up), so that a fast stream of
small frames does not wait for the actor's timer on a full mailbox.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, TypeAlias

import attrs
import trio

from actors import Reply

__all__ = [
    "BANDWIDTH_WINDOW",
    "BUSY_HOLD",
    "RTT_WINDOW",
    "SETTLE",
    "BandwidthEstimator",
    "BatchRoundTrip",
    "ConnectAttempted",
    "ConnectionClosedMetric",
    "ConnectionOpened",
    "Diagnostics",
    "DiagnosticsActor",
    "DiagnosticsQuery",
    "DiagnosticsRecorder",
    "FrameReceived",
    "FrameSent",
    "MetricEvent",
    "MetricMessage",
    "OperationsReceived",
    "OperationsSent",
    "SlidingWindowPercentile",
]

#: RTT samples kept for the percentile.
RTT_WINDOW: Final = 100
#: Bandwidth samples kept for the estimate.
BANDWIDTH_WINDOW: Final = 20
#: Seconds the actor lets metric events gather after the first one before it takes them
#: all (a scheduling round per burst, not per event; far below the mailbox's capacity).
SETTLE: Final = 0.01
#: Seconds without the settle after a burst that filled a quarter of the mailbox.
BUSY_HOLD: Final = 0.1


class SlidingWindowPercentile:
    """The last ``size`` samples, with nearest-rank percentiles."""

    def __init__(self, size: int = RTT_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size!r}")
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, sample: float) -> None:
        self._samples.append(sample)

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def latest(self) -> float:
        return self._samples[-1] if self._samples else 0.0

    def percentile(self, p: float) -> float:
        """Nearest rank: ``sorted[ceil(p / 100 * n) - 1]`` clamped; 0 when empty."""
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        index = math.ceil(p / 100 * len(ordered)) - 1
        return ordered[min(max(index, 0), len(ordered) - 1)]


class BandwidthEstimator:
    """Weighted mean of ``bytes / seconds`` samples, newest weighted most."""

    def __init__(self, size: int = BANDWIDTH_WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, size: int, seconds: float) -> None:
        """One transfer of ``size`` bytes that took ``seconds``; empty ones are ignored."""
        if size > 0 and seconds > 0:
            self._samples.append(size / seconds)

    def estimate(self) -> float | None:
        """Bytes per second, or None with fewer than two samples."""
        if len(self._samples) < 2:
            return None
        weight = 1.0
        total = weighted = 0.0
        for rate in reversed(self._samples):
            weighted += rate * weight
            total += weight
            weight *= 0.9
        return round(weighted / total)


@attrs.frozen(kw_only=True)
class Diagnostics:
    """A snapshot of the measured figures (see the module docstring).

    Attributes:
        rtt_ms: The latest batch round trip, in milliseconds (0 before any).
        rtt_p95_ms: 95th percentile of the recent round trips (nearest rank).
        rtt_samples: Round trips in the window.
        effective_bandwidth: Bytes per second, or None with fewer than two samples.
        operations_sent: Our operations sent (a resent operation counts again).
        operations_received: Operations received from the server.
        bytes_sent: Bytes of every frame sent.
        bytes_received: Bytes of every frame received.
        frames_sent: Frames sent.
        frames_received: Frames received.
        batches_acknowledged: Our batches the server acknowledged.
        connection_attempts: Connection attempts made.
        connections: Handshakes accepted.
        reconnects: Handshakes accepted after the first one.
        connected: Whether a connection is up now.
        uptime: Seconds the current connection has been up (0 when offline).
    """

    rtt_ms: float = 0.0
    rtt_p95_ms: float = 0.0
    rtt_samples: int = 0
    effective_bandwidth: float | None = None
    operations_sent: int = 0
    operations_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    batches_acknowledged: int = 0
    connection_attempts: int = 0
    connections: int = 0
    reconnects: int = 0
    connected: bool = False
    uptime: float = 0.0


# --------------------------------------------------------------------------- metric events


@attrs.frozen
class FrameSent:
    size: int


@attrs.frozen
class FrameReceived:
    size: int


@attrs.frozen
class OperationsSent:
    count: int


@attrs.frozen
class OperationsReceived:
    count: int


@attrs.frozen
class BatchRoundTrip:
    """One of our batches was acknowledged ``seconds`` after it was sent."""

    seconds: float
    size: int


@attrs.frozen
class ConnectAttempted:
    pass


@attrs.frozen
class ConnectionOpened:
    """A handshake was accepted at ``time`` (``trio.current_time()``)."""

    time: float


@attrs.frozen
class ConnectionClosedMetric:
    pass


MetricEvent: TypeAlias = (
    FrameSent
    | FrameReceived
    | OperationsSent
    | OperationsReceived
    | BatchRoundTrip
    | ConnectAttempted
    | ConnectionOpened
    | ConnectionClosedMetric
)


@attrs.frozen
class DiagnosticsQuery:
    """Answered with a snapshot once every metric sent before it has been counted."""

    reply: Reply[Diagnostics]


#: What the metrics mailbox carries.
MetricMessage: TypeAlias = MetricEvent | DiagnosticsQuery


class DiagnosticsRecorder:
    """Folds metric events into figures; ``snapshot(now)`` makes a :class:`Diagnostics`."""

    def __init__(self) -> None:
        self._rtt = SlidingWindowPercentile()
        self._bandwidth = BandwidthEstimator()
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "operations_sent",
                "operations_received",
                "bytes_sent",
                "bytes_received",
                "frames_sent",
                "frames_received",
                "batches_acknowledged",
                "connection_attempts",
                "connections",
            ),
            0,
        )
        self._connected_at: float | None = None

    def record(self, event: MetricEvent) -> None:
        counts = self._counts
        match event:
            case FrameSent(size):
                counts["frames_sent"] += 1
                counts["bytes_sent"] += size
            case FrameReceived(size):
                counts["frames_received"] += 1
                counts["bytes_received"] += size
            case OperationsSent(count):
                counts["operations_sent"] += count
            case OperationsReceived(count):
                counts["operations_received"] += count
            case BatchRoundTrip(seconds, size):
                counts["batches_acknowledged"] += 1
                self._rtt.add(seconds * 1000)
                self._bandwidth.add(size, seconds)
            case ConnectAttempted():
                counts["connection_attempts"] += 1
            case ConnectionOpened(time):
                counts["connections"] += 1
                self._connected_at = time
            case ConnectionClosedMetric():
                self._connected_at = None

    def snapshot(self, now: float) -> Diagnostics:
        counts = self._counts
        return Diagnostics(
            rtt_ms=self._rtt.latest,
            rtt_p95_ms=self._rtt.percentile(95),
            rtt_samples=len(self._rtt),
            effective_bandwidth=self._bandwidth.estimate(),
            reconnects=max(counts["connections"] - 1, 0),
            connected=self._connected_at is not None,
            uptime=0.0 if self._connected_at is None else now - self._connected_at,
            **counts,
        )


class DiagnosticsActor:
    """Receives metric events and keeps the :class:`DiagnosticsRecorder` current.

    Args:
        recorder: Where the figures live (shared with the handle that reads snapshots;
            only this actor writes to it).
        events: The receive end of the metrics mailbox.
    """

    def __init__(
        self, recorder: DiagnosticsRecorder, events: trio.MemoryReceiveChannel[MetricMessage]
    ) -> None:
        self._recorder = recorder
        self._events = events

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._events:
            task_status.started()
            # A quarter of the mailbox (inf: unbounded; 0: unbuffered, never settle).
            busy = self._events.statistics().max_buffer_size // 4
            busy_until = math.inf if busy < 1 else -math.inf
            async for event in self._events:
                self._take(event)
                settled = trio.current_time() >= busy_until
                if settled:
                    await trio.sleep(SETTLE)
                taken = self._take_buffered()
                if busy >= 1 and (taken >= busy or (taken and not settled)):
                    busy_until = trio.current_time() + BUSY_HOLD

    def _take_buffered(self) -> int:
        """Take every event already in the mailbox; how many there were."""
        taken = 0
        while True:
            try:
                event = self._events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return taken  # the end of the channel ends the `async for`
            self._take(event)
            taken += 1

    def _take(self, event: MetricMessage) -> None:
        if isinstance(event, DiagnosticsQuery):
            event.reply.send(self._recorder.snapshot(trio.current_time()))
        else:
            self._recorder.record(event)
