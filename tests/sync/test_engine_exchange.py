"""The engine against a scripted server over MemoryTransport: the exchange, step by step."""

from __future__ import annotations

import trio
import trio.testing
from sync_fakes import FakeServer, HarnessFactory, server_message_id

from kora.core.operation import OpType
from kora.protocol.messages import (
    Acknowledgment,
    Handshake,
    OperationBatch,
    OperationRejected,
)
from kora.store import LocalMutation, open_store
from kora.sync import SyncStatus


async def test_handshake_delta_and_streaming(harness: HarnessFactory) -> None:
    async with harness(batch_size=2) as h:
        queued = [await h.write(f"offline-{n}") for n in range(3)]
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        handshake = await server.expect(Handshake)
        assert handshake.node_id == h.store.node_id
        assert handshake.last_delivery_sequence == 0
        assert handshake.version_vector == {h.store.node_id: 3}
        delivery = await server.accept(handshake)
        # The delta: 3 queued ops in 2 batches, indexed, the last one final.
        first = await server.receive_batch()
        second = await server.receive_batch()
        assert [op.id for op in first.operations + second.operations] == [op.id for op in queued]
        assert (first.batch_index, first.total_batches, first.is_final) == (0, 2, False)
        assert (second.batch_index, second.total_batches, second.is_final) == (1, 2, True)
        # Our delta goes out before we answer the server's stream (the Kora.js order).
        ack = await server.expect(Acknowledgment)
        assert ack.acknowledged_message_id == delivery.message_id
        assert ack.delivery_sequence == 0
        assert h.engine.status is not SyncStatus.SYNCED
        await server.ack(first)
        await server.ack(second)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert await h.store.pending_count() == 0
        # Streaming: a new write goes out as a {isFinal: true, batchIndex: 0} batch.
        live = await h.write("live")
        batch = await server.receive_batch()
        assert [op.id for op in batch.operations] == [live.id]
        assert (batch.batch_index, batch.total_batches, batch.is_final) == (0, None, True)
        assert h.engine.pending_operations == 1
        await server.ack(batch)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert h.engine.last_synced_at is not None
    statuses: list[object] = []
    for payload in h.of("sync:status"):
        if not statuses or statuses[-1] != payload["status"]:
            statuses.append(payload["status"])
    assert statuses[:4] == ["offline", "connected", "syncing", "synced"]
    names = h.names()
    assert names.index("sync:connected") < names.index("sync:sent") < names.index("sync:synced")
    sent = [op.id for payload in h.of("sync:sent") for op in payload["operations"]]  # type: ignore[attr-defined]
    assert sent == [op.id for op in [*queued, live]]


async def test_nothing_leaves_the_queue_without_an_ack(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(ack_timeout=30.0) as h:
        op = await h.write("precious")
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        await server.accept(await server.expect(Handshake))
        batch = await server.receive_batch()
        assert [o.id for o in batch.operations] == [op.id]
        # No acknowledgment: after ack_timeout the connection is reopened, the op resent.
        assert await h.store.pending_count() == 1
        again = FakeServer(await h.network.accept())
        assert h.of("sync:disconnected")[0]["reason"] == (
            f"Timed out waiting for acknowledgment of outbound batch {batch.message_id}"
        )
        await again.accept(await again.expect(Handshake))
        resent = await again.receive_batch()
        assert [o.id for o in resent.operations] == [op.id]
        await again.ack(resent)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert await h.store.pending_count() == 0


async def test_inbound_batches_follow_the_watermark_rules(harness: HarnessFactory) -> None:
    async with open_store(None) as other:
        ops = [
            await other.write_local(
                LocalMutation(type=OpType.INSERT, collection="todos", data={"n": n})
            )
            for n in range(3)
        ]
        async with harness() as h:
            await h.engine.connect()
            server = FakeServer(await h.network.accept())
            handshake = await server.expect(Handshake)
            delivery = await server.accept(handshake, server_max=2, delivery=ops[:2])
            await server.ack(await server.receive_batch())
            ack = await server.expect(Acknowledgment)
            assert (ack.acknowledged_message_id, ack.delivery_sequence) == (
                delivery.message_id,
                2,
            )
            assert ack.last_sequence_number == ops[1].sequence_number
            with trio.fail_after(5):
                await h.engine.wait_synced()
            assert await h.store.delivery_watermark("") == 2
            # A gap (base 5 > watermark 2) is neither applied nor acknowledged.
            gap = OperationBatch(
                message_id=server_message_id(),
                operations=(ops[2],),
                is_final=True,
                batch_index=0,
                base_delivery_sequence=5,
                max_delivery_sequence=6,
            )
            await server.send(gap)
            # A duplicate (base 0 < watermark 2) is re-acknowledged, not applied.
            duplicate = OperationBatch(
                message_id=server_message_id(),
                operations=(ops[0],),
                is_final=True,
                batch_index=0,
                base_delivery_sequence=0,
                max_delivery_sequence=1,
            )
            await server.send(duplicate)
            re_ack = await server.expect(Acknowledgment)
            assert re_ack.acknowledged_message_id == duplicate.message_id
            assert (re_ack.last_sequence_number, re_ack.delivery_sequence) == (0, 2)
            assert await h.store.get("todos", ops[2].record_id) is None
            # The chained batch is applied and acknowledged.
            chained = OperationBatch(
                message_id=server_message_id(),
                operations=(ops[2],),
                is_final=True,
                batch_index=0,
                base_delivery_sequence=2,
                max_delivery_sequence=3,
            )
            await server.send(chained)
            final_ack = await server.expect(Acknowledgment)
            assert (final_ack.acknowledged_message_id, final_ack.delivery_sequence) == (
                chained.message_id,
                3,
            )
            assert await h.store.get("todos", ops[2].record_id) is not None
            assert await h.store.delivery_watermark("") == 3
            received = [op.id for p in h.of("sync:received") for op in p["operations"]]  # type: ignore[attr-defined]
            assert received == [op.id for op in ops]


async def test_operation_rejected_moves_the_op_to_the_rejected_store(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:
        server = await h.streaming()
        bad = await h.write("forbidden")
        batch = await server.receive_batch()
        await server.send(
            OperationRejected(
                message_id=server_message_id(),
                operation_id=bad.id,
                collection="todos",
                record_id=bad.record_id,
                code="SCOPE_VIOLATION",
                message="not yours",
                retriable=False,
            )
        )
        await server.ack(batch)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        rejected = await h.store.rejected_operations()
        assert [(r.op_id, r.code) for r in rejected] == [(bad.id, "SCOPE_VIOLATION")]
        assert h.of("sync:operation-rejected")[0]["operation_id"] == bad.id
        assert await h.store.pending_count() == 0


async def test_window_keeps_several_batches_in_flight_acknowledged_in_order(
    harness: HarnessFactory,
) -> None:
    async with harness(batch_size=1, window=3) as h:
        server = await h.streaming()
        with trio.fail_after(5):
            await h.engine.wait_synced()
        for n in range(5):
            await h.write(f"w{n}")
        first = [await server.receive_batch() for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        # The window is full: nothing more goes out until an acknowledgment.
        assert len([m for m in server.messages if isinstance(m, OperationBatch)]) == 4
        await server.ack(first[0])
        fourth = await server.receive_batch()
        for batch in [*first[1:], fourth]:
            await server.ack(batch)
        await server.ack(await server.receive_batch())
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert await h.store.pending_count() == 0


async def test_out_of_order_acknowledgment_acknowledges_nothing(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(batch_size=1, window=2, ack_timeout=10.0) as h:
        server = await h.streaming()
        one, two = await h.write("one"), await h.write("two")
        b1, b2 = await server.receive_batch(), await server.receive_batch()
        await server.ack(b2)  # names the newer batch: not trusted, nothing dequeued
        await trio.testing.wait_all_tasks_blocked()
        assert {op.id for op in await h.store.pending()} == {one.id, two.id}
        await server.ack(b1)
        await server.ack(b2)
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert await h.store.pending_count() == 0
