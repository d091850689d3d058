"""The app's event bus and change feed, without a store."""

from __future__ import annotations

import logging

import attrs
import pytest
import trio
import trio.testing

from kora.app import ChangeFeed, Event, EventBus, Lagged, Overflow
from kora.core.errors import ClosedError, LocalError


def test_event_is_frozen_and_its_payload_read_only() -> None:
    source = {"id": "r1"}
    event = Event("record:changed", source)
    source["id"] = "changed later"
    assert event.payload == {"id": "r1"}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.payload["id"] = "r2"  # type: ignore[index]


def test_callbacks_match_glob_patterns_and_off_removes_them() -> None:
    bus = EventBus()
    seen: list[tuple[str, str]] = []
    bus.on("sync:*", lambda e: seen.append(("sync", e.name)))
    exact = bus.on("record:changed", lambda e: seen.append(("exact", e.name)))

    def everything(e: Event) -> None:
        seen.append(("all", e.name))

    bus.on("*", everything)
    bus.emit("sync:connected")
    bus.emit("record:changed", {"id": "x"})
    bus.emit("operation:created")
    assert seen == [
        ("sync", "sync:connected"),
        ("all", "sync:connected"),
        ("exact", "record:changed"),
        ("all", "record:changed"),
        ("all", "operation:created"),
    ]
    seen.clear()
    exact()
    bus.off("*", everything)
    bus.off("*", everything)  # removing twice is a no-op
    bus.emit("record:changed")
    bus.emit("sync:sent")
    assert seen == [("sync", "sync:sent")]
    assert bus.statistics().callbacks == 1


def test_listeners_that_come_and_go_between_events_of_one_name_are_honoured() -> None:
    # The bus remembers who receives each event name: every change must forget that.
    bus = EventBus()
    seen: list[str] = []
    bus.emit("operation:created")
    first = bus.on("operation:*", lambda e: seen.append("first"))
    bus.emit("operation:created")
    bus.on("*", lambda e: seen.append("second"))
    bus.emit("operation:created")
    first()
    bus.emit("operation:created")
    assert seen == ["first", "first", "second", "second"]


def test_a_callback_that_adds_or_removes_listeners_affects_the_next_event_only() -> None:
    bus = EventBus()
    seen: list[str] = []

    def late(e: Event) -> None:
        seen.append("late")

    def adder(e: Event) -> None:
        seen.append("adder")
        bus.on("x", late)

    bus.on("x", adder)
    bus.emit("x")
    assert seen == ["adder"]
    bus.off("x", adder)
    bus.emit("x")
    assert seen == ["adder", "late"]


def test_events_of_many_names_reach_their_listeners() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.on("app:*", lambda e: seen.append(e.name))
    names = [f"app:{index}" for index in range(1_000)]
    for name in names:
        bus.emit(name)
        bus.emit("other")
    assert seen == names


def test_off_needs_the_same_pattern() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.on("a", seen.append)  # type: ignore[arg-type]
    bus.off("b", seen.append)  # type: ignore[arg-type]
    bus.emit("a")
    assert [e.name for e in seen] == ["a"]  # type: ignore[attr-defined]


def test_async_callbacks_are_refused() -> None:
    bus = EventBus()

    async def handler(event: Event) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="subscribe"):
        bus.on("*", handler)


def test_a_failing_callback_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bus.on("*", broken)
    bus.on("*", lambda e: seen.append(e.name))
    with caplog.at_level(logging.ERROR, logger="kora.app"):
        event = bus.emit("x:y", {"n": 1})
    assert event == Event("x:y", {"n": 1})
    assert seen == ["x:y"]
    assert bus.statistics().callback_errors == 1
    assert "boom" in caplog.text


async def test_subscription_receives_matching_events_in_order() -> None:
    bus = EventBus()
    async with bus.subscribe("record:*") as events:
        bus.emit("record:changed", {"n": 1})
        bus.emit("operation:created")
        bus.emit("record:changed", {"n": 2})
        assert events.statistics().buffered == 2
        first = await events.receive()
        second = await events.receive()
    assert [first.payload["n"], second.payload["n"]] == [1, 2]
    assert bus.statistics().subscriptions == 0


async def test_subscriber_waits_for_the_next_event() -> None:
    bus = EventBus()
    received: list[str] = []
    async with bus.subscribe() as events, trio.open_nursery() as nursery:

        async def consume() -> None:
            async for event in events:
                received.append(event.name)

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        bus.emit("a")
        await trio.testing.wait_all_tasks_blocked()
        assert received == ["a"]
        bus.emit("b")
        bus.close()  # ends the iteration once the buffer is drained
    assert received == ["a", "b"]


async def test_a_full_buffer_drops_the_oldest_and_raises_lagged_once() -> None:
    bus = EventBus()
    async with bus.subscribe("*", max_buffer=3) as events:
        for n in range(5):
            bus.emit("tick", {"n": n})  # never blocks although nobody reads
        stats = events.statistics()
        assert (stats.buffered, stats.dropped) == (3, 2)
        with pytest.raises(Lagged) as info:
            await events.receive()
        assert info.value.missed == 2
        assert isinstance(info.value, LocalError)
        # The subscription goes on with the newest events that were kept.
        assert [(await events.receive()).payload["n"] for _ in range(3)] == [2, 3, 4]
        bus.emit("tick", {"n": 5})
        assert (await events.receive()).payload["n"] == 5


async def test_lagged_ends_an_async_for_and_the_next_loop_resumes() -> None:
    bus = EventBus()
    async with bus.subscribe("*", max_buffer=1) as events:
        bus.emit("a")
        bus.emit("b")
        with pytest.raises(Lagged):
            async for _ in events:
                pass  # pragma: no cover
        bus.close()
        assert [e.name async for e in events] == ["b"]


async def test_drop_oldest_is_silent_but_counted() -> None:
    bus = EventBus()
    async with bus.subscribe("*", max_buffer=2, overflow=Overflow.DROP_OLDEST) as events:
        for name in "abcd":
            bus.emit(name)
        bus.close()
        assert [e.name async for e in events] == ["c", "d"]
        assert events.statistics().dropped == 2


async def test_subscribing_to_a_closed_bus_fails() -> None:
    bus = EventBus()
    bus.close()
    with pytest.raises(ClosedError):
        async with bus.subscribe():
            pass  # pragma: no cover


@pytest.mark.parametrize("size", [0, -1, 1.5])
def test_buffer_size_must_be_a_positive_int(size: object) -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        EventBus().subscribe(max_buffer=size)  # type: ignore[arg-type]


async def test_leaving_the_block_stops_delivery() -> None:
    bus = EventBus()
    bus.emit("late")
    async with bus.subscribe() as events:
        bus.emit("late")
    bus.emit("late")
    assert events.statistics().buffered == 1
    await events.receive()
    assert events.statistics().buffered == 0
    with pytest.raises(trio.EndOfChannel):
        await events.receive()


async def test_change_feed_wakes_waiters_of_the_bumped_collection() -> None:
    feed = ChangeFeed()
    woke: list[str] = []

    async def wait(collection: str) -> None:
        assert await feed.wait_past(collection, feed.generation(collection))
        woke.append(collection)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "todos")
        nursery.start_soon(wait, "users")
        await trio.testing.wait_all_tasks_blocked()
        feed.bump("todos")
        await trio.testing.wait_all_tasks_blocked()
        assert woke == ["todos"]
        feed.bump("users")
    assert woke == ["todos", "users"]


async def test_change_feed_close_releases_waiters() -> None:
    feed = ChangeFeed()
    feed.bump("todos")
    assert await feed.wait_past("todos", 0)  # already past: returns at once
    result: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            result.append(await feed.wait_past("todos", 1))

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        feed.close()
    assert result == [False]
    assert feed.closed


def test_events_of_a_batch_reach_their_listeners_or_are_only_counted() -> None:
    bus = EventBus()
    bus._emit_each("operation:created", "operation", ["a", "b"])
    assert bus.statistics().published == 2
    seen: list[object] = []
    bus.on("operation:*", lambda e: seen.append(e.payload["operation"]))
    bus._emit_each("operation:created", "operation", ["c", "d"])
    assert seen == ["c", "d"]
    assert bus.statistics().published == 4
