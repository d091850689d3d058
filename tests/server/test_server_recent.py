"""The hub's window of recent commits and the delivery stream's shortcuts: same answers as
the store, fewer reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation
from kora.core.operations import create_operation
from kora.server.delivery import DeliveryBatch, OwnRun, delivery_stream, recent_delivery
from kora.server.hub import Hub, RecentOperations
from kora.server.stores import MemoryServerStore
from kora.server.stores.base import DeliveredOperation

WALL = 1_700_000_000_000


def op(node: str, seq: int, collection: str = "todos") -> Operation:
    return create_operation(
        type="insert",
        node_id=node,
        collection=collection,
        record_id=f"{node}-{seq}",
        data={"n": seq},
        previous_data=None,
        timestamp=HLCTimestamp(WALL + seq, 0, node),
        sequence_number=seq,
    )


LOG = [DeliveredOperation(op("n", s), s) for s in range(1, 41)]


def at(*sequences: int) -> list[DeliveredOperation]:
    return [LOG[s - 1] for s in sequences]


def seqs(delivered: list[DeliveredOperation] | None) -> list[int] | None:
    return None if delivered is None else [d.delivery_sequence for d in delivered]


# ---------------------------------------------------------------- the window


def test_window_reads_a_contiguous_run() -> None:
    recent = RecentOperations()
    recent.add(at(1, 2, 3))
    assert seqs(recent.read(0, 10)) == [1, 2, 3]
    assert seqs(recent.read(1, 1)) == [2]
    assert seqs(recent.read(3, 10)) == []
    assert recent.read(4, 10) is None  # beyond what it knows


def test_an_empty_window_starts_where_the_first_commit_is() -> None:
    recent = RecentOperations()
    recent.add(at(7, 8))
    assert (recent.base, recent.end) == (6, 8)
    assert recent.read(5, 10) is None  # 6 was never seen here
    assert seqs(recent.read(6, 10)) == [7, 8]


def test_out_of_order_commits_wait_for_the_gap() -> None:
    recent = RecentOperations()
    recent.add(at(1))
    recent.add(at(3))
    assert recent.end == 1  # 2 is on its way
    recent.add(at(2))
    assert recent.end == 3
    assert seqs(recent.read(0, 10)) == [1, 2, 3]


def test_skip_to_restarts_after_commits_it_will_not_see() -> None:
    recent = RecentOperations()
    recent.add(at(1, 2))
    recent.add(at(5))
    recent.skip_to(4)
    assert (recent.base, recent.end) == (4, 5)
    assert recent.read(2, 10) is None
    assert seqs(recent.read(4, 10)) == [5]


def test_the_window_is_bounded_by_count_and_bytes() -> None:
    by_count = RecentOperations(max_operations=3)
    by_count.add(at(1, 2, 3, 4, 5))
    assert (by_count.base, by_count.end, len(by_count)) == (2, 5, 3)
    by_bytes = RecentOperations(max_bytes=250)
    by_bytes.add(at(1, 2, 3), {d.operation.id: 100 for d in at(1, 2, 3)})
    assert (by_bytes.base, by_bytes.held_bytes) == (1, 200)


def test_a_gap_that_never_fills_does_not_hold_memory() -> None:
    recent = RecentOperations(max_operations=3)
    recent.add(at(1))
    recent.add(at(3, 4, 5, 6))  # 2 never comes
    assert recent.read(0, 10) is None
    assert len(recent) <= 3
    assert seqs(recent.read(recent.base, 10)) == list(range(recent.base + 1, 7))


# ---------------------------------------------------------------- the hub


def test_the_hub_answers_only_when_its_window_reaches_the_newest_commit() -> None:
    hub = Hub()
    hub.publish(2, at(1, 2))
    assert seqs(hub.read_recent(0, 10)) == [1, 2]
    hub.publish(4, at(4))  # 3 is still being published
    assert hub.read_recent(0, 10) is None
    hub.publish(3, at(3))
    assert seqs(hub.read_recent(2, 10)) == [3, 4]


def test_commits_published_without_operations_are_read_from_the_store() -> None:
    hub = Hub()
    hub.publish(2, at(1, 2))
    hub.publish(5)  # another process committed 3..5
    assert hub.read_recent(2, 10) is None
    hub.publish(6, at(6))
    assert seqs(hub.read_recent(5, 10)) == [6]


def test_an_applied_commit_behind_the_stores_maximum_restarts_the_window() -> None:
    hub = Hub()
    hub.publish(1, at(1))
    hub.publish(3, at(2))  # another process committed 3 right after ours
    assert hub.read_recent(1, 10) is None
    assert seqs(hub.read_recent(3, 10)) == []


def test_a_gap_the_store_follower_reports_restarts_the_window() -> None:
    hub = Hub()
    hub.publish(1, at(1))
    hub.publish(3, at(3))  # 2: another process's, or a publication still on its way
    assert hub.read_recent(1, 10) is None
    hub.publish(3)  # the store follower: nothing more will come for 2
    assert hub.read_recent(1, 10) is None
    assert seqs(hub.read_recent(3, 10)) == []


async def test_a_repeated_publication_wakes_nobody_twice() -> None:
    hub = Hub()
    with hub.subscribe() as subscription:
        hub.publish(1, at(1))
        await subscription.wait()
        hub.publish(1)  # the store follower reporting the same commit
        assert subscription.pending() == 0
        hub.publish()  # "something may be new": always wakes
        assert subscription.pending() == 1


async def test_a_subscription_keeps_one_wake_up_and_wakes_a_waiting_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub()
    woken: list[int] = []
    with hub.subscribe() as subscription:
        assert hub.publish(1) == 1
        assert hub.publish(2) == 1
        assert (subscription.pending(), subscription.coalesced) == (1, 1)
        await subscription.wait()  # the kept wake-up: at once
        assert subscription.pending() == 0
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                await subscription.wait()
                woken.append(hub.max_delivery_sequence)

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            hub.publish(3)
        assert woken == [3]
        assert subscription.pending() == 0  # handed to the waiter, not kept
        with trio.move_on_after(1) as timer:
            await subscription.wait()
        assert timer.cancelled_caught  # nothing new: a wait blocks
    assert hub.publish(4) == 0  # unsubscribed
    subscription.notify()  # after close: ignored
    assert subscription.pending() == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 40), st.integers(1, 4), st.booleans()), min_size=1, max_size=30
    ),
    st.integers(1, 8),
)
def test_the_window_never_disagrees_with_the_log(
    steps: list[tuple[int, int, bool]], capacity: int
) -> None:
    """Whatever order commits are published in, and whichever are never published with their
    operations, every answer is the log's own slice (or "read the store")."""
    print(f"steps={steps} capacity={capacity}")
    hub = Hub(RecentOperations(max_operations=capacity))
    for first, count, with_ops in steps:
        last = min(first + count - 1, len(LOG))
        if with_ops:
            hub.publish(last, at(*range(first, last + 1)))
        else:
            hub.publish(last)
        for after in range(0, len(LOG) + 1):
            for limit in (1, 3, 50):
                got = seqs(hub.read_recent(after, limit))
                if got is not None:
                    assert got == list(range(after + 1, after + 1 + len(got)))
                    assert len(got) <= limit
                    if len(got) < limit:  # "that is the end of the log" as far as it knows
                        assert after + len(got) >= hub.max_delivery_sequence


# ---------------------------------------------------------------- the delivery stream


class CountingStore(MemoryServerStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def operations_after_delivery(self, after: int, limit: int) -> list[DeliveredOperation]:
        self.reads += 1
        return await super().operations_after_delivery(after, limit)


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    async with CountingStore() as opened:
        yield opened


async def everything(_: Operation) -> bool:
    return True


async def stream(store: CountingStore, **kwargs: object) -> list[DeliveryBatch]:
    options: dict[str, object] = {
        "batch_size": 2,
        "visible": everything,
        "exclude_node": None,
        "finalize_when_empty": False,
    }
    options.update(kwargs)
    return [batch async for batch in delivery_stream(store, **options)]  # type: ignore[arg-type]


async def test_the_window_gives_the_same_batches_without_reading_the_store(
    store: CountingStore,
) -> None:
    hub = Hub()
    for start in range(1, 8, 2):
        result = await store.append_batch([op("a", start), op("b", start)])
        hub.publish(result.max_delivery_sequence, result.applied)
    for after in range(0, 9):
        for exclude in (None, "a"):
            from_store = await stream(store, after=after, exclude_node=exclude)
            reads = store.reads
            from_memory = await stream(
                store, after=after, exclude_node=exclude, recent=hub.read_recent
            )
            assert from_memory == from_store
            assert store.reads == reads


async def test_the_clients_own_run_is_not_scanned_again(store: CountingStore) -> None:
    own = OwnRun()
    await store.append_batch([op("me", s) for s in range(1, 5)])
    options: dict[str, object] = {"exclude_node": "me", "scan_chunk": 2, "skip_threshold": 0}
    assert await stream(store, after=0, own_run=own, **options) == []
    assert (own.start, own.through) == (0, 4)
    reads = store.reads
    assert await stream(store, after=0, own_run=own, **options) == []
    assert store.reads == reads + 1  # one read after 4, not three from 0
    await store.append_batch([op("other", 1), op("me", 5)])
    batches = await stream(store, after=0, own_run=own, **options)
    plain = await stream(store, after=0, **options)
    assert batches == plain
    assert [(b.base, b.max, [o.node_id for o in b.operations]) for b in batches] == [
        (0, 6, ["other"])
    ]
    assert (own.start, own.through) == (0, 4)  # the run ends where "other" is


async def test_an_own_run_is_not_used_without_excluding_the_client(store: CountingStore) -> None:
    own = OwnRun(start=0, through=3)
    await store.append_batch([op("me", s) for s in range(1, 4)])
    batches = await stream(store, after=0, exclude_node=None, own_run=own)
    assert [len(b.operations) for b in batches] == [2, 1]


async def test_the_empty_batch_still_comes_after_a_long_own_run(store: CountingStore) -> None:
    own = OwnRun()
    await store.append_batch([op("me", s) for s in range(1, 4)])
    assert await stream(store, after=0, exclude_node="me", own_run=own, skip_threshold=4) == []
    await store.append_batch([op("me", 4)])
    assert await stream(store, after=0, exclude_node="me", own_run=own, skip_threshold=4) == [
        DeliveryBatch((), 0, 4, True, 0)
    ]


# ---------------------------------------------------------------- the synchronous path


@settings(max_examples=150, deadline=None)
@given(
    commits=st.lists(
        st.lists(st.sampled_from(["a", "b", "me"]), min_size=1, max_size=4), max_size=8
    ),
    after=st.integers(0, 30),
    exclude=st.sampled_from([None, "me"]),
    hidden=st.sampled_from([None, "a"]),
    batch_size=st.integers(1, 4),
    finalize=st.booleans(),
    skip_threshold=st.sampled_from([None, 0, 3]),
    run=st.tuples(st.integers(0, 6), st.integers(0, 8)),
)
async def test_the_synchronous_path_gives_the_stream_s_batches(
    commits: list[list[str]],
    after: int,
    exclude: str | None,
    hidden: str | None,
    batch_size: int,
    finalize: bool,
    skip_threshold: int | None,
    run: tuple[int, int],
) -> None:
    """Same batches and same own run as ``delivery_stream``, or ``None`` and nothing changed."""
    async with CountingStore() as store:
        hub = Hub()
        counters: dict[str, int] = {}
        for nodes in commits:
            batch = []
            for node in nodes:
                counters[node] = counters.get(node, 0) + 1
                batch.append(op(node, counters[node]))
            result = await store.append_batch(batch)
            hub.publish(result.max_delivery_sequence, result.applied)
        after = min(after, await store.max_delivery_sequence())

        async def visible(candidate: Operation) -> bool:
            return candidate.node_id != hidden

        options: dict[str, object] = {
            "after": after,
            "batch_size": batch_size,
            "exclude_node": exclude,
            "finalize_when_empty": finalize,
            "skip_threshold": skip_threshold,
            "scan_chunk": 3,
        }
        # An own run that is a fact of this log, as a session would have found it.
        start, through = sorted(run)
        while through > start and any(
            d.operation.node_id != "me"
            for d in await store.operations_after_delivery(start, through - start)
        ):
            through -= 1
        through = min(through, await store.max_delivery_sequence())
        own_stream = OwnRun(start, max(start, through))
        own_sync = OwnRun(own_stream.start, own_stream.through)
        expected = [
            b
            async for b in delivery_stream(
                store,
                visible=visible,
                own_run=own_stream,
                **options,  # type: ignore[arg-type]
            )
        ]
        got = recent_delivery(
            hub.read_recent,
            visible_now=lambda candidate: candidate.node_id != hidden,
            own_run=own_sync,
            **options,  # type: ignore[arg-type]
        )
        assert got == expected
        assert own_sync == own_stream


def test_the_synchronous_path_declines_without_changing_anything() -> None:
    hub = Hub()
    hub.publish(4, at(3, 4))  # the window starts at 2

    def sync(after: int, **kwargs: object) -> list[DeliveryBatch] | None:
        options: dict[str, object] = {
            "batch_size": 10,
            "finalize_when_empty": True,
            "exclude_node": None,
            "visible_now": lambda _: True,
        }
        options.update(kwargs)
        return recent_delivery(hub.read_recent, after=after, **options)  # type: ignore[arg-type]

    assert sync(0) is None  # behind the window
    own = OwnRun()
    assert sync(2, visible_now=lambda _: None, exclude_node="me", own_run=own) is None
    assert own == OwnRun()
    assert sync(2) == [DeliveryBatch(tuple(d.operation for d in at(3, 4)), 2, 4, True, 0)]
