"""Diagnostics figures: nearest-rank percentile, bandwidth estimate, exact counters."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from actors import ask
from kora.sync.diagnostics import (
    SETTLE,
    BandwidthEstimator,
    BatchRoundTrip,
    ConnectAttempted,
    ConnectionClosedMetric,
    ConnectionOpened,
    DiagnosticsActor,
    DiagnosticsQuery,
    DiagnosticsRecorder,
    FrameReceived,
    FrameSent,
    MetricMessage,
    OperationsReceived,
    OperationsSent,
    SlidingWindowPercentile,
)


def test_percentile_is_nearest_rank() -> None:
    window = SlidingWindowPercentile(100)
    for sample in range(1, 21):  # 1..20
        window.add(float(sample))
    assert window.percentile(95) == 19.0  # ceil(0.95 * 20) = 19th smallest
    assert window.percentile(50) == 10.0
    assert window.percentile(100) == 20.0
    assert window.latest == 20.0


def test_percentile_of_nothing_is_zero() -> None:
    assert SlidingWindowPercentile().percentile(95) == 0.0


def test_window_slides() -> None:
    window = SlidingWindowPercentile(3)
    for sample in (100.0, 1.0, 2.0, 3.0):
        window.add(sample)
    assert len(window) == 3
    assert window.percentile(100) == 3.0


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_percentile_matches_the_definition(samples: list[float]) -> None:
    window = SlidingWindowPercentile(100)
    for sample in samples:
        window.add(sample)
    kept = sorted(samples[-100:])
    assert window.percentile(95) == kept[max(math.ceil(0.95 * len(kept)) - 1, 0)]


def test_bandwidth_needs_two_samples_and_weights_the_newest() -> None:
    estimator = BandwidthEstimator()
    estimator.add(1000, 1.0)
    assert estimator.estimate() is None
    estimator.add(0, 1.0)  # ignored
    estimator.add(3000, 1.0)
    # (3000 * 1 + 1000 * 0.9) / 1.9
    assert estimator.estimate() == round((3000 + 900) / 1.9)


def test_recorder_counts_exactly_and_measures_uptime() -> None:
    recorder = DiagnosticsRecorder()
    events: list[MetricMessage] = [
        ConnectAttempted(),
        ConnectAttempted(),
        ConnectionOpened(10.0),
        FrameSent(100),
        FrameSent(50),
        FrameReceived(70),
        OperationsSent(3),
        OperationsReceived(4),
        BatchRoundTrip(0.02, 100),
        BatchRoundTrip(0.04, 100),
    ]
    for event in events:
        assert not isinstance(event, DiagnosticsQuery)
        recorder.record(event)
    snapshot = recorder.snapshot(now=12.5)
    assert (snapshot.frames_sent, snapshot.bytes_sent) == (2, 150)
    assert (snapshot.frames_received, snapshot.bytes_received) == (1, 70)
    assert (snapshot.operations_sent, snapshot.operations_received) == (3, 4)
    assert snapshot.rtt_ms == pytest.approx(40.0)
    assert snapshot.rtt_p95_ms == pytest.approx(40.0)
    assert snapshot.batches_acknowledged == 2
    assert snapshot.effective_bandwidth == round((2500 + 5000 * 0.9) / 1.9)
    assert snapshot.connection_attempts == 2
    assert snapshot.connected
    assert snapshot.uptime == 2.5
    recorder.record(ConnectionClosedMetric())
    recorder.record(ConnectionOpened(20.0))
    later = recorder.snapshot(now=21.0)
    assert later.reconnects == 1
    assert later.uptime == 1.0


async def test_actor_answers_after_counting_everything_sent_before() -> None:
    recorder = DiagnosticsRecorder()
    send, receive = trio.open_memory_channel[MetricMessage](4)
    async with trio.open_nursery() as nursery:
        await nursery.start(DiagnosticsActor(recorder, receive).run)
        for _ in range(10):  # more than the buffer: the sender waits, nothing is lost
            await send.send(OperationsSent(1))
        snapshot = await ask(send, DiagnosticsQuery, timeout=5)
        assert snapshot.operations_sent == 10
        send.close()


async def test_actor_takes_events_in_bursts_after_a_short_settle(autojump_clock: object) -> None:
    recorder = DiagnosticsRecorder()
    send, receive = trio.open_memory_channel[MetricMessage](256)
    async with trio.open_nursery() as nursery:
        await nursery.start(DiagnosticsActor(recorder, receive).run)
        start = trio.current_time()
        send.send_nowait(OperationsSent(1))
        await trio.sleep(SETTLE / 2)
        send.send_nowait(OperationsSent(2))  # in the same burst: no wake-up of its own
        snapshot = await ask(send, DiagnosticsQuery, timeout=5)
        assert snapshot.operations_sent == 3
        assert trio.current_time() - start == pytest.approx(SETTLE)
        send.close()


async def test_a_busy_mailbox_never_waits_for_the_settle(autojump_clock: object) -> None:
    recorder = DiagnosticsRecorder()
    send, receive = trio.open_memory_channel[MetricMessage](8)
    async with trio.open_nursery() as nursery:
        await nursery.start(DiagnosticsActor(recorder, receive).run)
        start = trio.current_time()
        for _ in range(1000):  # the sender waits whenever the mailbox is full
            await send.send(OperationsSent(1))
        snapshot = await ask(send, DiagnosticsQuery, timeout=5)
        assert snapshot.operations_sent == 1000
        # The first burst settles; the mailbox was full by then, so the next ones do not.
        assert trio.current_time() - start < 3 * SETTLE
        send.close()
