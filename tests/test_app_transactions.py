"""``app.transaction()``, and the events an app publishes for its writes (both stores)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import kora
from kora.app import App, Event, TransactionState
from kora.core.operation import Operation, OpType

SCHEMA = kora.define_schema(
    collections={
        "lists": {"name": kora.string()},
        "todos": {
            "title": kora.string(),
            "listId": kora.string(optional=True),
            "count": kora.integer(default=0),
        },
    },
)


@pytest.fixture(params=["sqlite", "memory"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    path = tmp_path / "app.db" if request.param == "sqlite" else None
    async with kora.open_app(SCHEMA, path=path) as opened:
        yield opened


def record_events(app: App, pattern: str = "*") -> list[Event]:
    seen: list[Event] = []
    app.events.on(pattern, seen.append)
    return seen


# -------------------------------------------------------------------------- transactions


async def test_a_transaction_commits_all_its_writes_under_one_id(app: App) -> None:
    existing = await app.todos.insert({"title": "old"})
    events = record_events(app)
    async with app.transaction() as tx:
        list_id = await tx.lists.insert({"name": "groceries"})
        todo_id = await tx.todos.insert({"title": "milk", "listId": list_id})
        await tx.todos.increment(todo_id, "count", 2)
        await tx.collection("todos").update(existing.id, {"listId": list_id})
        await tx.todos.delete(existing.id)
        assert tx.staged == 5
        # Nothing is visible before the block ends.
        assert await app.lists.count() == 0
        assert (await app.todos.get(existing.id)) == existing
        assert events == []
    assert tx.state is TransactionState.COMMITTED
    ops = tx.operations
    assert [op.type for op in ops] == [
        OpType.INSERT,
        OpType.INSERT,
        OpType.UPDATE,
        OpType.UPDATE,
        OpType.DELETE,
    ]
    assert {op.transaction_id for op in ops} == {tx.id}
    # Each depends on the one before it (spec 3.6).
    assert all(prev.id in op.causal_deps for prev, op in itertools.pairwise(ops))
    todo = await app.todos.get(todo_id)
    assert todo is not None
    assert dict(todo.fields) == {
        "title": "milk",
        "listId": list_id,
        "count": 2,
    }
    assert await app.todos.get(existing.id) is None
    names = [e.name for e in events]
    assert names.count("operation:created") == 5
    assert names[-1] == "transaction:committed"
    assert events[-1].payload == {"transaction_id": tx.id, "operations": ops}
    assert app.statistics().transactions_committed == 1


async def test_an_exception_in_the_block_writes_nothing(app: App) -> None:
    transaction: list[kora.Transaction] = []

    async def fail_inside() -> None:
        async with app.transaction() as tx:
            transaction.append(tx)
            await tx.lists.insert({"name": "never"})
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_inside()
    [tx] = transaction
    assert tx.state is TransactionState.ROLLED_BACK
    assert tx.operations == ()
    assert await app.lists.count() == 0
    assert await app.pending_operations() == 0
    assert app.statistics().transactions_rolled_back == 1


async def test_cancelling_the_block_writes_nothing(app: App) -> None:
    with trio.CancelScope() as scope:
        async with app.transaction() as tx:
            await tx.lists.insert({"name": "never"})
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert tx.state is TransactionState.ROLLED_BACK
    assert await app.lists.count() == 0


async def test_staged_writes_are_checked_at_once(app: App) -> None:
    async with app.transaction() as tx:
        with pytest.raises(kora.SchemaValidationError):
            await tx.todos.insert({"title": 5})
        with pytest.raises(kora.RecordNotFoundError, match="nothing of the transaction"):
            await tx.todos.update("missing", {"title": "x"})
        new_id = await tx.todos.insert({"title": "new"})
        await tx.todos.update(new_id, {"title": "renamed"})  # exists once staged
        await tx.todos.delete(new_id)
        with pytest.raises(kora.RecordNotFoundError):
            await tx.todos.increment(new_id, "count")  # deleted in this transaction
        assert tx.staged == 3  # the failed writes were not staged
    assert await app.todos.count() == 0
    assert len(tx.operations) == 3


async def test_a_failing_commit_writes_nothing(app: App) -> None:
    target = await app.todos.insert({"title": "target"})
    transaction: list[kora.Transaction] = []

    async def commit_fails() -> None:
        async with app.transaction() as tx:
            transaction.append(tx)
            await tx.lists.insert({"name": "would be written"})
            await tx.todos.update(target.id, {"title": "changed"})
            # Outside the transaction, committed at once: the commit will then fail.
            await app.todos.delete(target.id)

    with pytest.raises(kora.RecordNotFoundError):
        await commit_fails()
    [tx] = transaction
    assert tx.state is TransactionState.ROLLED_BACK
    assert await app.lists.count() == 0


async def test_a_transaction_is_over_after_its_block(app: App) -> None:
    async with app.transaction() as tx:
        pass
    assert tx.state is TransactionState.COMMITTED
    assert tx.operations == ()
    with pytest.raises(kora.ClosedError, match="already committed"):
        await tx.lists.insert({"name": "late"})
    context = app.transaction()
    async with context:
        pass
    with pytest.raises(kora.LocalError, match="only once"):
        async with context:
            pass  # pragma: no cover


async def test_transaction_attribute_errors(app: App) -> None:
    async with app.transaction() as tx:
        with pytest.raises(AttributeError, match="Collections: lists, todos"):
            _ = tx.nope
        with pytest.raises(kora.SchemaValidationError):
            tx.collection("nope")
        assert tx.todos is tx.collection("todos")
        assert "todos" in repr(tx.todos)


async def test_all_staged_atomic_helpers(app: App) -> None:
    todo = await app.todos.insert({"title": "t", "count": 10})
    async with app.transaction() as tx:
        await tx.todos.decrement(todo.id, "count", 3)
        await tx.todos.max(todo.id, "count", 20)
        await tx.todos.min(todo.id, "count", 15)
    after = await app.todos.get(todo.id)
    assert after is not None
    assert after.fields["count"] == 15


async def test_concurrent_transactions_commit_separately(app: App) -> None:
    async with trio.open_nursery() as nursery:
        transactions = []

        async def write(n: int) -> None:
            async with app.transaction() as tx:
                transactions.append(tx)
                await tx.lists.insert({"name": f"l{n}"})
                await tx.lists.insert({"name": f"m{n}"})

        for n in range(4):
            nursery.start_soon(write, n)
    assert await app.lists.count() == 8
    for tx in transactions:
        assert {op.transaction_id for op in tx.operations} == {tx.id}


# ------------------------------------------------------------------------------ events


async def test_write_events(app: App) -> None:
    events = record_events(app)
    todo = await app.todos.insert({"title": "x"})
    await app.todos.update(todo.id, {"title": "y"})
    names = [e.name for e in events]
    assert names == ["record:changed", "operation:created"] * 2
    changed, created = events[0], events[1]
    assert changed.payload == {"collection": "todos", "ids": frozenset({todo.id})}
    operation = created.payload["operation"]
    assert isinstance(operation, Operation)
    assert (operation.type, operation.record_id) == (OpType.INSERT, todo.id)


async def test_a_transaction_announces_each_collection_once(app: App) -> None:
    changed = record_events(app, "record:changed")
    async with app.transaction() as tx:
        a = await tx.lists.insert({"name": "a"})
        b = await tx.lists.insert({"name": "b"})
        t = await tx.todos.insert({"title": "t"})
    assert {e.payload["collection"]: e.payload["ids"] for e in changed} == {
        "lists": frozenset({a, b}),
        "todos": frozenset({t}),
    }


async def test_a_failed_write_publishes_nothing(app: App) -> None:
    events = record_events(app)
    with pytest.raises(kora.RecordNotFoundError):
        await app.todos.delete("missing")
    assert events == []


async def test_a_raising_callback_does_not_fail_the_write(app: App) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    app.events.on("*", broken)
    todo = await app.todos.insert({"title": "still written"})
    assert await app.todos.get(todo.id) == todo
    assert app.statistics().events.callback_errors == 2


async def test_subscriptions_see_writes_and_end_when_the_app_closes(tmp_path: Path) -> None:
    names: list[str] = []
    # The nursery outlives the app: once the app closed, the subscriber drains its
    # buffer and its loop ends, so the nursery can exit.
    async with (
        trio.open_nursery() as nursery,
        kora.open_app(SCHEMA, path=tmp_path / "e.db") as app,
    ):
        ready = trio.Event()

        async def listen() -> None:
            async with app.events.subscribe("operation:*") as events:
                ready.set()
                async for event in events:
                    names.append(event.name)

        nursery.start_soon(listen)
        await ready.wait()
        await app.lists.insert({"name": "a"})
        await app.lists.insert({"name": "b"})
    assert names == ["operation:created", "operation:created"]


async def test_staged_array_helpers(tmp_path: Path) -> None:
    schema = kora.define_schema(collections={"bags": {"items": kora.array(default=[])}})
    async with kora.open_app(schema, path=None) as app:
        bag = await app.bags.insert({"items": [1, 2]})
        async with app.transaction() as tx:
            await tx.bags.append(bag.id, "items", 3)
            await tx.bags.remove(bag.id, "items", 1)
            assert "1 staged" not in repr(tx)
            assert "2 staged" in repr(tx)
        after = await app.bags.get(bag.id)
        assert after is not None
        assert after.fields["items"] == [2, 3]
        assert repr(app.bags) == "<Collection 'bags'>"
        assert app.bags.app is app
        assert tx.bags.name == "bags"
