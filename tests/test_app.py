"""The App facade on both stores: collections, queries, atomic helpers, lifecycle.

Every test that takes the ``app`` fixture runs twice: on a SQLite file (``path=<tmp>``) and
on the in-memory store (``path=None``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kora
from kora.app import OPERATORS, App, Query
from kora.core.ids import is_uuid
from kora.core.operation import AtomicOpType, Operation, OpType

SCHEMA = kora.define_schema(
    version=3,
    collections={
        "todos": {
            "title": kora.string(),
            "done": kora.boolean(default=False),
            "priority": kora.integer(default=0),
            "tags": kora.array(kora.string(), default=[]),
            "score": kora.number(optional=True),
        },
        "users": {"name": kora.string()},
    },
)


@pytest.fixture(params=["sqlite", "memory"])
def app_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return tmp_path / "app.db" if request.param == "sqlite" else None


@pytest.fixture
async def app(app_path: Path | None) -> AsyncIterator[App]:
    async with kora.open_app(SCHEMA, path=app_path) as opened:
        yield opened


def created_operations(app: App) -> list[Operation]:
    """Collect the operations announced by ``operation:created`` from now on."""
    seen: list[Operation] = []
    app.events.on("operation:created", lambda e: seen.append(e.payload["operation"]))  # type: ignore[arg-type]
    return seen


# ------------------------------------------------------------------------- collections


async def test_collections_by_attribute_and_by_name(app: App) -> None:
    assert isinstance(app.todos, kora.Collection)
    assert app.todos is app.collection("todos")
    assert app.todos.name == "todos"
    assert list(app.todos.definition.fields) == ["title", "done", "priority", "tags", "score"]
    assert {"todos", "users"} <= set(dir(app))
    assert app.sync is None
    assert "todos" in repr(app)


async def test_unknown_collection_names_fail_helpfully(app: App) -> None:
    with pytest.raises(AttributeError, match=r"no attribute 'todo'.*Collections: todos, users"):
        _ = app.todo
    with pytest.raises(AttributeError):
        _ = app._private
    with pytest.raises(kora.SchemaValidationError, match="Available collections: todos, users"):
        app.collection("todo")


async def test_insert_validates_applies_defaults_and_makes_a_uuid7(app: App) -> None:
    ops = created_operations(app)
    todo = await app.todos.insert({"title": "milk"})
    assert is_uuid(todo.id)
    assert todo.id[14] == "7"
    assert todo.collection == "todos"
    assert dict(todo.fields) == {"title": "milk", "done": False, "priority": 0, "tags": []}
    assert not todo.deleted
    assert await app.todos.get(todo.id) == todo
    [op] = ops
    assert (op.type, op.record_id, op.node_id) == (OpType.INSERT, todo.id, app.node_id)
    assert op.schema_version == 3
    assert op.transaction_id is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, 'Required field "title" is missing'),
        ({"title": 1}, 'Field "title" in collection "todos" must be a string'),
        ({"title": "x", "colour": "red"}, 'Unknown field "colour"'),
        ({"title": "x", "tags": ["a", 2]}, "tags"),
    ],
)
async def test_insert_rejects_bad_data(app: App, data: dict[str, object], message: str) -> None:
    with pytest.raises(kora.SchemaValidationError, match=message):
        await app.todos.insert(data)
    assert await app.todos.count() == 0
    assert await app.pending_operations() == 0


async def test_update_returns_the_record_after_the_change(app: App) -> None:
    todo = await app.todos.insert({"title": "milk"})
    updated = await app.todos.update(todo.id, {"done": True, "score": 2.5})
    assert dict(updated.fields) == {
        "title": "milk",
        "done": True,
        "priority": 0,
        "tags": [],
        "score": 2.5,
    }
    assert updated.version > todo.version
    assert await app.todos.get(todo.id) == updated


async def test_update_errors(app: App) -> None:
    todo = await app.todos.insert({"title": "milk"})
    with pytest.raises(kora.RecordNotFoundError) as missing:
        await app.todos.update("no-such-id", {"done": True})
    assert isinstance(missing.value, kora.LocalError)
    with pytest.raises(kora.SchemaValidationError, match="done"):
        await app.todos.update(todo.id, {"done": "yes"})
    with pytest.raises(kora.ValidationError, match="at least one field"):
        await app.todos.update(todo.id, {})
    with pytest.raises(kora.ValidationError, match="record id"):
        await app.todos.update("", {"done": True})
    assert await app.todos.get(todo.id) == todo


async def test_delete_hides_the_record_and_cannot_repeat(app: App) -> None:
    keep = await app.todos.insert({"title": "keep"})
    gone = await app.todos.insert({"title": "gone"})
    await app.todos.delete(gone.id)
    assert await app.todos.get(gone.id) is None
    assert [r.id for r in await app.todos.all()] == [keep.id]
    with pytest.raises(kora.RecordNotFoundError):
        await app.todos.delete(gone.id)
    with pytest.raises(kora.RecordNotFoundError):
        await app.todos.update(gone.id, {"done": True})
    with pytest.raises(kora.RecordNotFoundError):
        await app.todos.increment(gone.id, "priority")


# ----------------------------------------------------------------------------- queries


@pytest.fixture
async def filled(app: App) -> dict[str, str]:
    """Five todos; returns title -> id."""
    rows = [
        {"title": "a", "priority": 3, "done": True, "score": 1.5},
        {"title": "b", "priority": 1},
        {"title": "c", "priority": 2, "done": True},
        {"title": "d", "priority": 3, "score": -1},
        {"title": "e", "priority": 0, "tags": ["x"]},
    ]
    return {row["title"]: (await app.todos.insert(row)).id for row in rows}  # type: ignore[misc]


def titles(records: list[kora.Record]) -> list[str]:
    return [str(r.fields["title"]) for r in records]


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda q: q, ["a", "b", "c", "d", "e"]),
        (lambda q: q.where(done=True), ["a", "c"]),
        (lambda q: q.where(done=False, priority=3), ["d"]),
        (lambda q: q.where(("priority", ">", 1)), ["a", "c", "d"]),
        (lambda q: q.where(("priority", ">=", 3)).where(done=False), ["d"]),
        (lambda q: q.where(("priority", "<", 2)), ["b", "e"]),
        (lambda q: q.where(("priority", "<=", 1)), ["b", "e"]),
        (lambda q: q.where(("priority", "!=", 3)), ["b", "c", "e"]),
        (lambda q: q.where(("title", "in", ["e", "b", "zz"])), ["b", "e"]),
        (lambda q: q.where(("title", "in", ("a",))), ["a"]),
        (lambda q: q.where(score=None), ["b", "c", "e"]),  # missing compares as null
        (lambda q: q.where(("score", "<", 10)), ["a", "d"]),  # ordering never matches null
        (lambda q: q.order_by("-priority", "title"), ["a", "d", "c", "b", "e"]),
        (lambda q: q.order_by("priority").order_by("-title"), ["e", "b", "c", "d", "a"]),
        (lambda q: q.order_by("score"), ["b", "c", "e", "d", "a"]),  # nulls first
        (lambda q: q.order_by("-title").limit(2), ["e", "d"]),
        (lambda q: q.order_by("-title").offset(3), ["b", "a"]),
        (lambda q: q.order_by("title").offset(1).limit(2), ["b", "c"]),
        (lambda q: q.limit(0), []),
        (lambda q: q.where(done=True).offset(5), []),
    ],
)
async def test_queries(
    app: App, filled: dict[str, str], build: object, expected: list[str]
) -> None:
    query: Query = build(app.todos.query())  # type: ignore[operator]
    assert titles(await query.all()) == expected
    assert await query.count() == len(expected)
    first = await query.first()
    assert (None if first is None else first.fields["title"]) == (expected[0] if expected else None)


async def test_query_by_id_and_collection_shorthands(app: App, filled: dict[str, str]) -> None:
    record = await app.todos.where(id=filled["c"]).first()
    assert record is not None
    assert record.fields["title"] == "c"
    assert await app.todos.count() == 5
    assert titles(await app.todos.order_by("-title").limit(1).all()) == ["e"]
    assert titles(await app.todos.limit(1).all()) == ["a"]  # by id: creation order
    assert titles(await app.todos.offset(4).all()) == ["e"]
    first = await app.todos.first()
    assert first is not None
    assert first.id == filled["a"]
    assert await app.users.first() is None


async def test_queries_are_immutable_builders(app: App, filled: dict[str, str]) -> None:
    base = app.todos.where(done=True)
    narrowed = base.order_by("-title").limit(1)
    assert titles(await base.all()) == ["a", "c"]
    assert titles(await narrowed.all()) == ["c"]
    assert base.conditions == (("done", "==", True),)
    assert narrowed == app.todos.where(done=True).order_by("-title").limit(1)
    assert app.todos.query() != app.users.query()
    assert "'todos'" in repr(base)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda q: q.where(colour="red"), "Unknown field 'colour'.*Available fields: id, title"),
        (lambda q: q.where(("priority", "=", 1)), "unknown operator '='"),
        (lambda q: q.where(("priority", ">")), r"\(field, operator, value\)"),
        (lambda q: q.where(("title", "in", "abc")), "'in' needs a list"),
        (lambda q: q.order_by("nope"), "Unknown field 'nope'"),
        (lambda q: q.order_by("-"), "order_by takes field names"),
        (lambda q: q.limit(-1), "limit must be a non-negative int"),
        (lambda q: q.limit(True), "limit must be a non-negative int"),
        (lambda q: q.offset(1.5), "offset must be a non-negative int"),
    ],
)
async def test_bad_queries_fail_when_built(app: App, build: object, message: str) -> None:
    with pytest.raises(kora.QueryError, match=message) as info:
        build(app.todos.query())  # type: ignore[operator]
    assert isinstance(info.value, kora.ValidationError)


# ---------------------------------------------------------------------- atomic helpers


async def test_atomic_helpers(app: App) -> None:
    ops = created_operations(app)
    todo = await app.todos.insert({"title": "count", "priority": 5, "tags": ["a"]})
    rid = todo.id
    assert (await app.todos.increment(rid, "priority")).fields["priority"] == 6
    assert (await app.todos.increment(rid, "priority", by=10)).fields["priority"] == 16
    assert (await app.todos.decrement(rid, "priority", by=4)).fields["priority"] == 12
    assert (await app.todos.max(rid, "priority", 7)).fields["priority"] == 12
    assert (await app.todos.max(rid, "priority", 20)).fields["priority"] == 20
    assert (await app.todos.min(rid, "priority", 2)).fields["priority"] == 2
    assert (await app.todos.increment(rid, "score", 0.5)).fields["score"] == 0.5  # absent -> 0
    assert (await app.todos.append(rid, "tags", "b")).fields["tags"] == ["a", "b"]
    assert (await app.todos.append(rid, "tags", "a")).fields["tags"] == ["a", "b", "a"]
    assert (await app.todos.remove(rid, "tags", "a")).fields["tags"] == ["b"]
    intents = [
        (op.atomic_ops.get("priority", None)) for op in ops[1:7] if op.atomic_ops is not None
    ]
    assert [(i.type, i.value) for i in intents if i is not None] == [
        (AtomicOpType.INCREMENT, 1),
        (AtomicOpType.INCREMENT, 10),
        (AtomicOpType.INCREMENT, -4),
        (AtomicOpType.MAX, 7),
        (AtomicOpType.MAX, 20),
        (AtomicOpType.MIN, 2),
    ]


async def test_atomic_helpers_check_the_field_kind_and_value(app: App) -> None:
    todo = await app.todos.insert({"title": "x"})
    with pytest.raises(kora.SchemaValidationError, match="increment"):
        await app.todos.increment(todo.id, "title")
    with pytest.raises(kora.SchemaValidationError, match="append"):
        await app.todos.append(todo.id, "priority", 1)
    with pytest.raises(kora.SchemaValidationError, match="tags"):
        await app.todos.append(todo.id, "tags", 1)  # items must be strings
    with pytest.raises(kora.ValidationError, match="finite number"):
        await app.todos.decrement(todo.id, "priority", "1")  # type: ignore[arg-type]
    with pytest.raises(kora.ValidationError, match="finite number"):
        await app.todos.increment(todo.id, "priority", float("nan"))
    with pytest.raises(kora.SchemaValidationError, match="integer"):
        await app.todos.increment(todo.id, "priority", 0.5)
    assert await app.todos.get(todo.id) == todo


# --------------------------------------------------------------------- app-level API


async def test_node_id_pending_and_rejected_operations(app: App) -> None:
    assert is_uuid(app.node_id)
    todo = await app.todos.insert({"title": "x"})
    await app.todos.update(todo.id, {"done": True})
    assert await app.pending_operations() == 2
    assert await app.rejected_operations() == []
    [first, _] = await app._store.pending()
    await app._store.reject(first.id, code="SCOPE_VIOLATION", message="no", retriable=False)
    [rejected] = await app.rejected_operations()
    assert (rejected.op_id, rejected.code) == (first.id, "SCOPE_VIOLATION")
    assert await app.pending_operations() == 1


async def test_statistics(app: App) -> None:
    todo = await app.todos.insert({"title": "x"})
    await app.todos.delete(todo.id)
    async with app.todos.watch(), app.events.subscribe("*"):
        stats = app.statistics()
    assert stats.node_id == app.node_id
    assert stats.collections == ("todos", "users")
    assert stats.operations_created == 2
    assert stats.active_watches == 1
    assert stats.events.subscriptions == 1
    assert stats.store.change_counter == 2
    assert app.statistics().active_watches == 0


async def test_everything_raises_closed_error_after_the_app_closed(app_path: Path | None) -> None:
    async with kora.open_app(SCHEMA, path=app_path) as app:
        todo = await app.todos.insert({"title": "x"})
        query = app.todos.where(done=False)
    assert app.closed
    calls = [
        app.todos.insert({"title": "y"}),
        app.todos.update(todo.id, {"done": True}),
        app.todos.delete(todo.id),
        app.todos.get(todo.id),
        app.todos.increment(todo.id, "priority"),
        query.all(),
        query.count(),
        app.pending_operations(),
        app.rejected_operations(),
    ]
    for call in calls:
        with pytest.raises(kora.ClosedError):
            await call
    with pytest.raises(kora.ClosedError):
        async with query.watch():
            pass  # pragma: no cover
    with pytest.raises(kora.ClosedError):
        async with app.transaction():
            pass  # pragma: no cover
    with pytest.raises(kora.ClosedError):
        async with app.events.subscribe():
            pass  # pragma: no cover


async def test_reopening_a_file_keeps_records_and_node_id(tmp_path: Path) -> None:
    path = tmp_path / "persist.db"
    async with kora.open_app(SCHEMA, path=path) as app:
        node = app.node_id
        todo = await app.todos.insert({"title": "durable"})
        await app.todos.increment(todo.id, "priority", 2)
        async with app.transaction() as tx:
            await tx.users.insert({"name": "ada"})
    async with kora.open_app(SCHEMA, path=str(path)) as app:
        assert app.node_id == node
        again = await app.todos.get(todo.id)
        assert again is not None
        assert again.fields["priority"] == 2
        assert [u.fields["name"] for u in await app.users.all()] == ["ada"]
        assert await app.pending_operations() == 3
        later = await app.todos.update(todo.id, {"done": True})
        assert later.fields == {**todo.fields, "priority": 2, "done": True}


async def test_memory_apps_share_nothing() -> None:
    async with kora.open_app(SCHEMA, path=None) as one, kora.open_app(SCHEMA, path=None) as two:
        await one.todos.insert({"title": "only here"})
        assert await two.todos.count() == 0
        assert one.node_id != two.node_id


async def test_in_memory_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with kora.open_app(SCHEMA, path=":memory:") as app:
        await app.todos.insert({"title": "x"})
        assert await app.todos.count() == 1
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240  (a tiny directory listing)


async def test_default_path_is_app_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with kora.open_app(SCHEMA) as app:
        await app.todos.insert({"title": "x"})
    assert (tmp_path / "app.db").exists()


async def test_open_app_needs_a_schema() -> None:
    with pytest.raises(TypeError, match="define_schema"):
        async with kora.open_app({"todos": {}}, path=None):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_sync_must_be_sync_options_or_none() -> None:
    with pytest.raises(TypeError, match="SyncOptions"):
        async with kora.open_app(SCHEMA, path=None, sync=object()):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_the_body_exception_passes_through_open_app(app_path: Path | None) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with kora.open_app(SCHEMA, path=app_path):
            raise KeyError("mine")


async def test_cancelling_the_block_closes_the_app(app_path: Path | None) -> None:
    with trio.CancelScope() as scope:
        async with kora.open_app(SCHEMA, path=app_path) as app:
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert app.closed


def test_public_names_resolve_lazily() -> None:
    assert kora.open_app.__module__ == "kora.app"
    assert "open_app" in dir(kora)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = kora.nope  # type: ignore[attr-defined]


# ------------------------------------------------------------------------ properties

_conditions = st.lists(
    st.one_of(
        st.tuples(
            st.just("priority"),
            st.sampled_from([op for op in OPERATORS if op != "in"]),
            st.integers(-1, 4),
        ),
        st.tuples(st.just("priority"), st.just("in"), st.lists(st.integers(-1, 4), max_size=3)),
        st.tuples(st.just("done"), st.sampled_from(["==", "!="]), st.booleans()),
        st.tuples(
            st.just("score"), st.sampled_from(["==", "<", ">="]), st.none() | st.floats(-2, 2)
        ),
    ),
    max_size=2,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"priority": st.integers(0, 3), "done": st.booleans()},
            optional={"score": st.floats(-2, 2)},
        ),
        max_size=8,
    ),
    conditions=_conditions,
    order=st.lists(
        st.sampled_from(["priority", "-priority", "score", "-score", "title"]), max_size=2
    ),
    limit=st.none() | st.integers(0, 5),
    offset=st.integers(0, 5),
)
async def test_count_and_first_agree_with_all(
    rows: list[dict[str, object]],
    conditions: list[tuple[str, str, object]],
    order: list[str],
    limit: int | None,
    offset: int,
) -> None:
    async with kora.open_app(SCHEMA, path=None) as app:
        for n, row in enumerate(rows):
            await app.todos.insert({"title": f"t{n}", **row})
        query = app.todos.where(*conditions).order_by(*order).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        everything = await query.all()
        assert await query.count() == len(everything)
        assert await query.first() == (everything[0] if everything else None)
        unwindowed = await app.todos.where(*conditions).order_by(*order).all()
        end = None if limit is None else offset + limit
        assert everything == unwindowed[offset:end]
