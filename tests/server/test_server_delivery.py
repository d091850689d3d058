"""The delivery stream (spec 4.4) and the legacy delta (4.3) against a memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation
from kora.core.operations import create_operation
from kora.core.version_vector import VersionVector
from kora.server.delivery import (
    DeliveryBatch,
    decode_delta_cursor,
    delivery_stream,
    encode_delta_cursor,
    legacy_delta,
)
from kora.server.stores import MemoryServerStore

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


@pytest.fixture
async def store() -> AsyncIterator[MemoryServerStore]:
    async with MemoryServerStore() as opened:
        yield opened


async def everything(_: Operation) -> bool:
    return True


async def only_todos(candidate: Operation) -> bool:
    return candidate.collection == "todos"


async def collect(store: MemoryServerStore, **kwargs: object) -> list[DeliveryBatch]:
    options: dict[str, object] = {
        "batch_size": 2,
        "visible": everything,
        "exclude_node": None,
        "finalize_when_empty": True,
    }
    options.update(kwargs)
    return [batch async for batch in delivery_stream(store, **options)]  # type: ignore[arg-type]


async def test_empty_store_gives_one_empty_final_batch(store: MemoryServerStore) -> None:
    assert await collect(store, after=0) == [DeliveryBatch((), 0, 0, True, 0)]


async def test_batches_chain_base_to_previous_max(store: MemoryServerStore) -> None:
    await store.append_batch([op("a", s) for s in range(1, 6)])
    batches = await collect(store, after=0)
    assert [(b.base, b.max, b.is_final, b.batch_index) for b in batches] == [
        (0, 2, False, 0),
        (2, 4, False, 1),
        (4, 5, True, 2),
    ]


async def test_invisible_tail_is_skipped_by_the_final_max(store: MemoryServerStore) -> None:
    await store.append_batch([op("a", 1), op("a", 2, "secrets"), op("a", 3, "secrets")])
    batches = await collect(store, after=0, visible=only_todos)
    assert [(len(b.operations), b.base, b.max, b.is_final) for b in batches] == [(1, 0, 3, True)]


async def test_nothing_visible_sends_nothing_unless_asked(store: MemoryServerStore) -> None:
    await store.append_batch([op("a", 1, "secrets")])
    assert await collect(store, after=0, visible=only_todos, finalize_when_empty=False) == []
    assert await collect(store, after=0, visible=only_todos) == [DeliveryBatch((), 0, 1, True, 0)]


async def test_long_invisible_runs_advance_the_watermark(store: MemoryServerStore) -> None:
    await store.append_batch([op("a", s, "secrets") for s in range(1, 11)])
    batches = await collect(
        store, after=0, visible=only_todos, finalize_when_empty=False, skip_threshold=10
    )
    assert batches == [DeliveryBatch((), 0, 10, True, 0)]


async def test_own_node_is_excluded(store: MemoryServerStore) -> None:
    await store.append_batch([op("me", 1), op("other", 1), op("me", 2)])
    batches = await collect(store, after=0, exclude_node="me")
    assert [[o.node_id for o in b.operations] for b in batches] == [["other"]]
    assert batches[0].max == 3


async def test_stream_starts_after_the_watermark(store: MemoryServerStore) -> None:
    await store.append_batch([op("a", s) for s in range(1, 4)])
    batches = await collect(store, after=2, batch_size=10)
    assert [(b.base, b.max, [o.sequence_number for o in b.operations]) for b in batches] == [
        (2, 3, [3])
    ]


async def test_small_scan_chunks_give_the_same_batches(store: MemoryServerStore) -> None:
    await store.append_batch([op("a", s) for s in range(1, 8)])
    assert await collect(store, after=0, scan_chunk=1) == await collect(store, after=0)


async def test_legacy_delta_batches_and_cursor(store: MemoryServerStore) -> None:
    ops = [op("a", s) for s in range(1, 4)]
    await store.append_batch(ops)
    batches = await legacy_delta(
        store,
        client_vector=VersionVector.from_wire({"a": 1}),
        batch_size=1,
        visible=everything,
        delta_cursor=None,
    )
    assert [[o.id for o in b.operations] for b in batches] == [[ops[1].id], [ops[2].id]]
    assert [(b.batch_index, b.total_batches, b.is_final) for b in batches] == [
        (0, 2, False),
        (1, 2, True),
    ]
    assert decode_delta_cursor(batches[0].cursor) == (ops[1].id, 0)
    resumed = await legacy_delta(
        store,
        client_vector=VersionVector.from_wire({"a": 1}),
        batch_size=1,
        visible=everything,
        delta_cursor=batches[0].cursor,
    )
    assert [[o.id for o in b.operations] for b in resumed] == [[ops[2].id]]


async def test_legacy_delta_when_up_to_date(store: MemoryServerStore) -> None:
    batches = await legacy_delta(
        store,
        client_vector=VersionVector.from_wire({}),
        batch_size=10,
        visible=everything,
        delta_cursor=None,
    )
    assert [(b.operations, b.is_final, b.total_batches) for b in batches] == [((), True, 1)]


def test_delta_cursor_matches_the_reference_vector() -> None:
    # Spec Appendix A: the cursor of {lastOperationId: <id1>, batchIndex: 0}.
    id1 = "9ffd310a21534d4e0d18a6514fa486bd0c3957a0ba8d279c04ce277a751e6d06"
    expected = (
        "eyJsYXN0T3BlcmF0aW9uSWQiOiI5ZmZkMzEwYTIxNTM0ZDRlMGQxOGE2NTE0ZmE0ODZiZDBjMzk1N2EwYmE4"
        "ZDI3OWMwNGNlMjc3YTc1MWU2ZDA2IiwiYmF0Y2hJbmRleCI6MH0"
    )
    assert encode_delta_cursor(id1, 0) == expected
    assert decode_delta_cursor(expected) == (id1, 0)
    assert decode_delta_cursor("not base64 !") is None
    assert decode_delta_cursor(None) is None
