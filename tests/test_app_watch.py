"""``watch()``: initial results, changes, latest-wins under a slow consumer, lifecycle.

Ordering is made deterministic with channels and events (and, on the memory store, with
``wait_all_tasks_blocked``), never with sleeps.  Both stores run every test that takes the
``app`` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import kora
from kora.app import App, Watch, WatchStatistics

SCHEMA = kora.define_schema(
    collections={
        "todos": {"title": kora.string(), "done": kora.boolean(default=False)},
        "users": {"name": kora.string()},
    },
)


@pytest.fixture(params=["sqlite", "memory"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    path = tmp_path / "app.db" if request.param == "sqlite" else None
    async with kora.open_app(SCHEMA, path=path) as opened:
        yield opened


def titles(records: list[kora.Record]) -> list[str]:
    return [str(r.fields["title"]) for r in records]


async def test_first_iteration_gives_the_current_results(app: App) -> None:
    await app.todos.insert({"title": "a"})
    async with app.todos.where(done=False).watch() as results:
        assert titles(await anext(results)) == ["a"]
        assert results.statistics() == WatchStatistics(queries_run=1, results_given=1)


async def test_empty_results_are_given_too(app: App) -> None:
    async with app.todos.watch() as results:
        assert await anext(results) == []


async def test_each_change_to_the_results_is_given(app: App) -> None:
    async with app.todos.where(done=False).order_by("title").watch() as results:
        assert await anext(results) == []
        a = await app.todos.insert({"title": "a"})
        assert titles(await anext(results)) == ["a"]
        await app.todos.insert({"title": "b"})
        assert titles(await anext(results)) == ["a", "b"]
        await app.todos.update(a.id, {"done": True})
        assert titles(await anext(results)) == ["b"]


async def test_a_slow_consumer_skips_intermediate_states_and_gets_the_latest(app: App) -> None:
    async with app.todos.order_by("title").watch() as results:
        assert await anext(results) == []
        # Five commits while the consumer is busy elsewhere: nothing queues up.
        first = await app.todos.insert({"title": "a"})
        for title in "bcd":
            await app.todos.insert({"title": title})
        await app.todos.delete(first.id)
        assert titles(await anext(results)) == ["b", "c", "d"]
        # One query for the initial state and exactly one for all five changes.
        assert results.statistics() == WatchStatistics(queries_run=2, results_given=2)


async def test_a_slow_consumer_task(app: App) -> None:
    send, receive = trio.open_memory_channel[list[kora.Record]](0)
    go_on = trio.Event()

    async def consumer(results: Watch) -> None:
        with send:
            async for records in results:
                await send.send(records)
                await go_on.wait()  # the consumer is slow after its first result

    async with app.todos.watch() as results, trio.open_nursery() as nursery:
        nursery.start_soon(consumer, results)
        assert await receive.receive() == []
        for n in range(10):
            await app.todos.insert({"title": f"t{n}"})
        go_on.set()
        assert len(await receive.receive()) == 10
        assert results.statistics() == WatchStatistics(queries_run=2, results_given=2)
        nursery.cancel_scope.cancel()


async def test_changes_that_leave_the_results_equal_are_not_given(app: App) -> None:
    send, receive = trio.open_memory_channel[list[kora.Record]](0)

    async def consumer(results: Watch) -> None:
        with send:
            async for records in results:
                await send.send(records)

    async with app.todos.where(done=False).watch() as results, trio.open_nursery() as nursery:
        nursery.start_soon(consumer, results)
        assert await receive.receive() == []
        await app.users.insert({"name": "other collection"})  # does not wake the watch
        await app.todos.insert({"title": "done already", "done": True})  # wakes it; equal
        await app.todos.insert({"title": "open"})
        assert titles(await receive.receive()) == ["open"]
        # The "done already" write either got its own (discarded) query or was folded
        # into the last one; the users write never caused one.
        assert results.statistics().results_given == 2
        assert results.statistics().queries_run in (2, 3)
        nursery.cancel_scope.cancel()


async def test_only_relevant_changes_are_given_memory_store() -> None:
    # The memory store runs in the event loop, so wait_all_tasks_blocked is exact here.
    async with (
        kora.open_app(SCHEMA, path=None) as app,
        app.todos.where(done=False).watch() as results,
        trio.open_nursery() as nursery,
    ):
        given: list[list[kora.Record]] = []

        async def consumer() -> None:
            async for records in results:
                given.append(records)

        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert results.statistics() == WatchStatistics(queries_run=1, results_given=1)
        for n in range(3):
            await app.users.insert({"name": f"u{n}"})
        await trio.testing.wait_all_tasks_blocked()
        assert results.statistics() == WatchStatistics(queries_run=1, results_given=1)
        await app.todos.insert({"title": "hidden", "done": True})
        await trio.testing.wait_all_tasks_blocked()
        assert results.statistics() == WatchStatistics(queries_run=2, results_given=1)
        await app.todos.insert({"title": "t"})
        await trio.testing.wait_all_tasks_blocked()
        assert results.statistics() == WatchStatistics(queries_run=3, results_given=2)
        assert [titles(r) for r in given] == [[], ["t"]]
        nursery.cancel_scope.cancel()


async def test_watches_are_independent(app: App) -> None:
    async with app.todos.where(done=True).watch() as done, app.todos.watch() as every:
        assert await anext(done) == []
        assert await anext(every) == []
        await app.todos.insert({"title": "x"})
        assert titles(await anext(every)) == ["x"]
        await app.todos.insert({"title": "y", "done": True})
        assert titles(await anext(done)) == ["y"]
        assert titles(await anext(every)) == ["x", "y"]


async def test_watch_ends_when_the_app_closes(tmp_path: Path) -> None:
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        async with kora.open_app(SCHEMA, path=tmp_path / "w.db") as app:
            started = trio.Event()

            async def consumer() -> None:
                async with app.todos.watch() as results:
                    async for _ in results:
                        started.set()
                ended.set()

            nursery.start_soon(consumer)
            await started.wait()
        await ended.wait()
    assert app.statistics().active_watches == 0


async def test_a_watch_cannot_be_used_after_its_block(app: App) -> None:
    async with app.todos.watch() as results:
        await anext(results)
    with pytest.raises(kora.ClosedError, match="after its `async with` block"):
        await anext(results)


async def test_one_watch_has_one_reader(app: App) -> None:
    async with app.todos.watch() as results, trio.open_nursery() as nursery:
        await anext(results)
        nursery.start_soon(anext, results)  # parks, waiting for a change
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await anext(results)
        nursery.cancel_scope.cancel()


async def test_a_cancelled_reader_misses_nothing(app: App) -> None:
    async with app.todos.watch() as results:
        await anext(results)
        with trio.move_on_after(0) as scope:
            await anext(results)
        assert scope.cancelled_caught
        await app.todos.insert({"title": "after"})
        assert titles(await anext(results)) == ["after"]


async def test_a_watch_whose_app_closed_ends_even_with_a_change_pending(
    tmp_path: Path,
) -> None:
    async with kora.open_app(SCHEMA, path=tmp_path / "c.db") as app:
        context = app.todos.watch()
        results = await context.__aenter__()
        assert await anext(results) == []
        await app.todos.insert({"title": "unseen"})  # marks the watch stale
    assert [r async for r in results] == []
    await context.__aexit__(None, None, None)
    assert "todos" in repr(results.query)
