"""The scope the server granted, on the client: kept across restarts, and enforced outbound.

* The adopted ``acceptedScope`` is kept in the store's meta, so that the first handshake of
  a new process asks for it again with that view's delivery watermark (no re-download).
* Under a scope, queued local operations outside it are not sent (spec 5.3, 5.8); they are
  rejected locally with ``OUT_OF_SCOPE`` instead of being dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from sync_fakes import FakeServer, HarnessFactory

from kora.core.hlc import HLCTimestamp
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.protocol.messages import Handshake, OperationBatch
from kora.store import LocalMutation, Store, open_store
from kora.sync._view import SCOPE_META_KEY, ScopeMemo, decode_scope, view_signature
from kora.sync.scope import OUT_OF_SCOPE, needs_record, operation_in_scope

ALICE = {"todos": {"owner": "alice"}, "notes": {}}


async def first_handshake(h: Any) -> tuple[FakeServer, Handshake]:
    await h.engine.connect()
    server = FakeServer(await h.network.accept())
    return server, await server.expect(Handshake)


# ------------------------------------------------------------------ kept across restarts


async def test_the_granted_scope_is_asked_for_again_after_a_restart(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    path = str(tmp_path / "app.db")
    async with open_store(path) as store, harness(store=store) as h:
        server, handshake = await first_handshake(h)
        assert handshake.sync_scope is None
        await server.accept(handshake, accepted_scope=ALICE, server_max=5)
        await server.ack(await server.receive_batch())
        with trio.fail_after(5):
            await h.engine.wait_synced()
            while await store.delivery_watermark(view_signature(ALICE)) != 5:
                await trio.sleep(0.01)
    # A new process: the store file is all that is left.
    async with open_store(path) as store, harness(store=store) as h:
        server, handshake = await first_handshake(h)
        assert handshake.sync_scope == ALICE
        assert handshake.last_delivery_sequence == 5  # resumes: no full re-download
        await server.accept(handshake, accepted_scope=ALICE, server_max=5)
        await server.ack(await server.receive_batch())
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert await store.delivery_watermark(view_signature(ALICE)) == 5


async def test_an_unchanged_scope_is_not_written_again() -> None:
    writes: list[tuple[str, str | None]] = []
    async with open_store(None) as store:
        real_set_meta = store.set_meta

        async def counting_set_meta(key: str, value: str | None) -> None:
            writes.append((key, value))
            await real_set_meta(key, value)

        store.set_meta = counting_set_meta  # type: ignore[method-assign]
        memo = await ScopeMemo.load(store)
        await memo.adopt(store, ALICE)
        await memo.adopt(store, {"notes": {}, "todos": {"owner": "alice"}})  # same, reordered
        assert len(writes) == 1
        assert (await ScopeMemo.load(store)).scope == ALICE
        await memo.adopt(store, None)  # the server stopped scoping us: remembered too
        assert writes[-1] == (SCOPE_META_KEY, None)
        assert await store.get_meta(SCOPE_META_KEY) is None
        assert (await ScopeMemo.load(store)).scope is None


@pytest.mark.parametrize("text", ["not json", "[1]", '{"todos": 1}', "null"])
def test_an_unreadable_stored_scope_counts_as_none(text: str) -> None:
    assert decode_scope(text) is None


# ----------------------------------------------------------------------- the filter


def op(
    collection: str = "todos",
    type_: OpType = OpType.UPDATE,
    data: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
) -> Operation:
    return Operation(
        id="x",
        node_id="n",
        type=type_,
        collection=collection,
        record_id="r",
        data=data,
        previous_data=previous,
        timestamp=HLCTimestamp(1, 0, "n"),
        sequence_number=1,
    )


@pytest.mark.parametrize(
    ("operation", "record", "expected"),
    [
        (op("notes", data={"x": 1}), None, True),  # {} lets everything through
        (op("other", data={"owner": "alice"}), None, False),  # a collection not in the scope
        (op(data={"owner": "alice"}), None, True),
        (op(data={"owner": "bob"}), None, False),
        (op(data={"title": "t"}), {"owner": "alice"}, True),  # backfilled from the record
        (op(data={"title": "t"}), {"owner": "bob"}, False),
        (op(data={"title": "t"}), None, False),  # nothing says whose it is
        (op(data={"owner": "bob"}, previous={"owner": "alice"}), None, False),  # moves out
        (op(data={"t": 1}, previous={"owner": "alice"}), {"owner": "bob"}, True),
        (op(type_=OpType.DELETE), {"owner": "alice"}, True),
        (op(type_=OpType.DELETE), {"owner": "bob"}, False),
    ],
)
def test_operation_in_scope(
    operation: Operation, record: dict[str, Any] | None, expected: bool
) -> None:
    assert operation_in_scope(operation, ALICE, record) is expected
    assert operation_in_scope(operation, None, record)  # unscoped: everything goes


@pytest.mark.parametrize(
    ("actual", "expected", "equal"),
    [(1, 1.0, True), (True, 1, False), (True, True, True), ("1", 1, False), (None, None, True),
     (None, "a", False), ({"a": 1}, {"a": 1}, False), ([1], [1], False)],
)  # fmt: skip
def test_scope_fields_compare_like_javascript_strict_equality(
    actual: object, expected: object, equal: bool
) -> None:
    scope = {"todos": {"f": expected}}
    assert operation_in_scope(op(data={"f": actual}), scope) is equal  # type: ignore[arg-type]


def test_the_record_is_needed_only_for_a_missing_scope_field() -> None:
    assert not needs_record(op(data={"owner": "x"}), ALICE)
    assert not needs_record(op(data={"t": 1}, previous={"owner": "x"}), ALICE)
    assert needs_record(op(data={"t": 1}), ALICE)
    assert needs_record(op(type_=OpType.DELETE), ALICE)
    assert not needs_record(op("notes", data={"t": 1}), ALICE)  # {}: nothing to check
    assert not needs_record(op(data={"t": 1}), None)


# -------------------------------------------------------------------- in the engine


def mutation(collection: str, data: dict[str, Any], record_id: str) -> LocalMutation:
    return LocalMutation(type=OpType.INSERT, collection=collection, data=data, record_id=record_id)


async def test_queued_operations_outside_the_scope_are_rejected_not_sent(
    harness: HarnessFactory,
) -> None:
    async with open_store(None) as peer, harness(batch_size=10) as h:
        store: Store = h.store
        mine = await store.write_local(mutation("todos", {"owner": "alice", "n": 0}, "a"))
        theirs = await store.write_local(mutation("todos", {"owner": "bob"}, "b"))
        renamed = await store.write_local(
            LocalMutation(
                type=OpType.UPDATE,
                collection="todos",
                record_id="a",
                atomic={"n": AtomicOp(AtomicOpType.INCREMENT, 1)},
            )
        )  # carries no owner: judged on the record
        elsewhere = await store.write_local(mutation("secrets", {"owner": "alice"}, "s"))
        note = await store.write_local(mutation("notes", {"text": "hi"}, "n"))
        # Another node's operations the server lacks go out with the delta too, unless
        # they are outside the scope (then they are left out, not rejected: not ours).
        relayed_in = await peer.write_local(mutation("todos", {"owner": "alice"}, "p1"))
        relayed_out = await peer.write_local(mutation("todos", {"owner": "carol"}, "p2"))
        await store.apply_remote([relayed_in, relayed_out])
        server, handshake = await first_handshake(h)
        await server.accept(handshake, accepted_scope=ALICE)
        delta = await server.receive_batch()
        sent = {sent_op.id for sent_op in delta.operations}
        assert sent == {mine.id, renamed.id, note.id, relayed_in.id}
        await server.ack(delta)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        rejected = await store.rejected_operations()
        assert sorted((r.op_id, r.code, r.retriable) for r in rejected) == sorted(
            [(theirs.id, OUT_OF_SCOPE, False), (elsewhere.id, OUT_OF_SCOPE, False)]
        )
        assert await store.pending_count() == 0
        events = h.of("sync:operation-rejected")
        assert sorted(str(e["operation_id"]) for e in events) == sorted([theirs.id, elsewhere.id])
        assert all(e["code"] == OUT_OF_SCOPE and e["local"] is True for e in events)
        # Streaming: a new write outside the scope is rejected as well; one inside goes out.
        outside = await store.write_local(mutation("todos", {"owner": "bob"}, "c"))
        with trio.fail_after(5):
            while outside.id not in {r.op_id for r in await store.rejected_operations()}:
                await trio.sleep(0.01)
            await h.engine.wait_synced()
        inside = await store.write_local(mutation("todos", {"owner": "alice"}, "d"))
        live: OperationBatch = await server.receive_batch()
        assert [sent_op.id for sent_op in live.operations] == [inside.id]
        await server.ack(live)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        # Nothing else went out: the handshake, our delta, the live batch, one acknowledgment.
        batches = [m for m in server.messages if isinstance(m, OperationBatch)]
        assert batches == [delta, live]
        # The rejected operations keep their local effect: the app decides what to do.
        assert await store.get("todos", "b") is not None


async def test_without_a_scope_nothing_is_filtered(harness: HarnessFactory) -> None:
    async with harness() as h:
        ops = [
            await h.store.write_local(mutation("any", {"owner": "x"}, f"r{n}")) for n in range(3)
        ]
        server, handshake = await first_handshake(h)
        await server.accept(handshake)
        batch = await server.receive_batch()
        assert [sent.id for sent in batch.operations] == [o.id for o in ops]
        await server.ack(batch)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert await h.store.rejected_operations() == []
