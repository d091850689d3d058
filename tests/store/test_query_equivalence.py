"""Random records and queries: MemoryStore answers exactly as SQLite does."""

from __future__ import annotations

from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.store import LocalMutation, open_memory_store, open_sqlite_store

FIELDS = ["a", "b"]
values = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.5, -1.5, 2.0])
    | st.sampled_from(["", "A", "a", "b", "é", "10"])
    | st.lists(st.integers(0, 2), max_size=2)
)
record = st.dictionaries(st.sampled_from(FIELDS), values, max_size=2)
condition = st.tuples(
    st.sampled_from([*FIELDS, "id"]),
    st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
    values,
) | st.tuples(st.sampled_from(FIELDS), st.just("in"), st.lists(values, max_size=3))
ordering = st.lists(st.tuples(st.sampled_from([*FIELDS, "id"]), st.booleans()), max_size=2)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(record, max_size=8),
    deleted=st.sets(st.integers(0, 7)),
    where=st.lists(condition, max_size=2),
    order_by=ordering,
    limit=st.none() | st.integers(0, 5),
    offset=st.integers(0, 3),
)
def test_memory_and_sqlite_agree(
    rows: list[dict[str, Any]],
    deleted: set[int],
    where: list[Any],
    order_by: list[Any],
    limit: int | None,
    offset: int,
) -> None:
    async def run() -> None:
        answers = []
        async with open_memory_store() as memory, open_sqlite_store(":memory:") as sqlite:
            for store in (memory, sqlite):
                await store.write_local_many(
                    [
                        LocalMutation.insert("t", row, record_id=f"r{i}")
                        for i, row in enumerate(rows)
                    ]
                )
                for index in sorted(deleted):
                    if index < len(rows):
                        await store.write_local(LocalMutation.delete("t", f"r{index}"))
                found = await store.query("t", where, order_by, limit=limit, offset=offset)
                counted = await store.count("t", where)
                with_deleted = await store.count("t", where, include_deleted=True)
                answers.append(([r.id for r in found], counted, with_deleted))
        assert answers[0] == answers[1]

    trio.run(run)
