"""Hub, rate limiter, metrics, long-poll framing and limits: the server's small parts."""

from __future__ import annotations

import gc
import io
import json
import logging

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from kora.server.cli import SERVE_GC_THRESHOLDS, tune_collector
from kora.server.config import ServerLimits
from kora.server.hub import Hub
from kora.server.logs import JsonLinesFormatter, configure_logging, fields, get_logger
from kora.server.long_poll import (
    LongPollTransport,
    decode_varint_frames,
    encode_varint_frames,
    split_json_frames,
)
from kora.server.metrics import Counter, Histogram, MetricsRegistry
from kora.server.rate_limit import OperationRateLimiter
from kora.server.transport import TransportClosed

# ---------------------------------------------------------------- hub


async def test_hub_coalesces_wakeups_and_never_blocks() -> None:
    hub = Hub()
    with hub.subscribe() as slow, hub.subscribe() as fast:
        for sequence in range(1, 1001):
            hub.publish(sequence)  # never blocks, whatever the subscribers do
        assert slow.pending() == 1  # one wake-up stands for all of them
        assert slow.coalesced == 999
        await fast.wait()
        assert fast.pending() == 0
        assert hub.max_delivery_sequence == 1000
    assert hub.subscribers == 0


async def test_hub_follows_the_store(autojump_clock: trio.testing.MockClock) -> None:
    hub = Hub()
    commits = [3, 3, 7]
    failures = [RuntimeError("database restarted")]

    async def wait_for_commits(after: int) -> int:
        await trio.sleep(1)
        if failures:
            raise failures.pop()
        if not commits:
            await trio.sleep_forever()
        return commits.pop(0)

    with hub.subscribe() as subscription:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.follow_store, wait_for_commits)
            await subscription.wait()
            assert hub.max_delivery_sequence == 3
            await subscription.wait()
            assert hub.max_delivery_sequence == 7
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- rate limit


def test_rate_limit_bucket_refills_over_time() -> None:
    now = [0.0]
    limiter = OperationRateLimiter(per_minute=60, burst=10, clock=lambda: now[0])
    assert limiter.try_acquire("node", 10) == 0.0
    assert limiter.try_acquire("node", 1) == pytest.approx(1.0)  # one token per second
    assert limiter.try_acquire("other", 10) == 0.0  # buckets are per client
    now[0] = 5.0
    assert limiter.try_acquire("node", 5) == 0.0
    assert limiter.try_acquire("node", 1) > 0


def test_rate_limit_admits_a_batch_bigger_than_the_bucket_when_full() -> None:
    now = [0.0]
    limiter = OperationRateLimiter(per_minute=60, burst=10, clock=lambda: now[0])
    assert limiter.try_acquire("node", 50) == 0.0
    assert limiter.try_acquire("node", 1) > 0  # in debt now


def test_rate_limit_disabled() -> None:
    limiter = OperationRateLimiter(per_minute=0, burst=1, clock=lambda: 0.0)
    assert not limiter.enabled
    assert limiter.try_acquire("node", 10**6) == 0.0


# ---------------------------------------------------------------- metrics


def test_metrics_render_prometheus_text() -> None:
    registry = MetricsRegistry()
    counter = Counter("kora_things_total", "Things.", ["code"])
    histogram = Histogram("kora_wait_seconds", "Waits.", ["call"], buckets=(0.1, 1.0))
    registry.register(counter)
    registry.register(histogram)
    counter.inc(2, 'A"B')
    histogram.observe(0.05, "x")
    histogram.observe(0.5, "x")
    histogram.observe(5, "x")
    text = registry.render()
    assert '# TYPE kora_things_total counter\nkora_things_total{code="A\\"B"} 2\n' in text
    assert 'kora_wait_seconds_bucket{call="x",le="0.1"} 1' in text
    assert 'kora_wait_seconds_bucket{call="x",le="1"} 2' in text
    assert 'kora_wait_seconds_bucket{call="x",le="+Inf"} 3' in text
    assert 'kora_wait_seconds_count{call="x"} 3' in text
    with pytest.raises(ValueError, match="labels"):
        counter.inc(1)
    with pytest.raises(ValueError, match="decrease"):
        counter.inc(-1, "a")
    with pytest.raises(ValueError, match="already"):
        registry.register(Counter("kora_things_total", "again"))


# ---------------------------------------------------------------- long-poll framing


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_varint_framing_round_trips(frames: list[bytes]) -> None:
    assert decode_varint_frames(encode_varint_frames(frames)) == frames


def test_varint_framing_refuses_truncation() -> None:
    body = encode_varint_frames([b"x" * 200])
    with pytest.raises(ValueError, match="truncated"):
        decode_varint_frames(body[:-1])
    with pytest.raises(ValueError, match="length"):
        decode_varint_frames(b"\xff")


def test_json_frames_are_sliced_verbatim() -> None:
    one = '{"type":"acknowledgment","n":1.0}'
    two = '{"type":"x","nested":{"a":[1,2,{"b":"]"}]}}'
    assert split_json_frames(f"[{one}, {two}]") == [one, two]
    assert split_json_frames(f"  {one} ") == [one]
    assert split_json_frames("[]") == []
    for bad in ("[1]", "[", '[{"a":1},]', '[{"a":1}] x', "nope", '[{"a":1}{"b":2}]'):
        with pytest.raises(ValueError):
            split_json_frames(bad)


async def test_long_poll_mailbox_keeps_frames_until_acknowledged() -> None:
    mailbox = LongPollTransport(queue_frames=2)
    await mailbox.send("a")
    await mailbox.send("b")
    assert mailbox.outbound_full
    assert [f for _, f in mailbox.frames_after(0)] == ["a", "b"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.send, "c")  # waits: the client has not polled
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.last_number == 2
        mailbox.acknowledge(1)
    assert [n for n, _ in mailbox.frames_after(1)] == [2, 3]
    await mailbox.close(1000, "done")
    with pytest.raises(TransportClosed):
        await mailbox.send("d")
    with pytest.raises(TransportClosed):
        await mailbox.receive()


# ---------------------------------------------------------------- limits and logs


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="ping_interval"):
        ServerLimits(ping_interval=30, idle_timeout=20)
    with pytest.raises(ValueError, match="long_poll_hold"):
        ServerLimits(long_poll_hold=90)
    with pytest.raises(ValueError, match="positive"):
        ServerLimits(max_message_bytes=0)


def test_json_log_lines_carry_the_fields() -> None:
    stream = io.StringIO()
    handler = configure_logging(json_lines=True, stream=stream)
    try:
        get_logger("kora.server.session").info("hello", extra=fields(session="s1", n=2))
    finally:
        logging.getLogger("kora").removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "hello"
    assert (entry["session"], entry["n"], entry["logger"]) == ("s1", 2, "kora.server.session")
    assert isinstance(JsonLinesFormatter(), logging.Formatter)


def test_kora_serve_tunes_the_collector_of_its_own_process() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == SERVE_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
