"""``operation-rejected`` with ``retriable: true``: refused for now, kept queued, sent again.

The Kora.js client drops every rejected operation from its queue for good (spec 8.5), so a
validator that throws once (``VALIDATION_ERROR``, retriable) or a ``RATE_LIMIT`` loses the
write from sync.  Ours keeps it queued and sends it again after a delay.  Our own server
never refuses for now, so a scripted server plays a Kora.js one here.
"""

from __future__ import annotations

import trio
import trio.testing
from sync_fakes import FakeServer, HarnessFactory, server_message_id

from kora.core.operation import Operation
from kora.protocol.messages import Handshake, OperationRejected
from kora.sync.outbound import RETRY_BACKOFF


def refusal(
    op: Operation, *, code: str = "VALIDATION_ERROR", retriable: bool = True
) -> OperationRejected:
    return OperationRejected(
        message_id=server_message_id(),
        operation_id=op.id,
        collection=op.collection,
        record_id=op.record_id,
        code=code,
        message="Validator threw: database is busy" if retriable else "not allowed",
        retriable=retriable,
    )


async def no_more_batches(server: FakeServer) -> None:
    """Nothing more is sent for longer than the longest retry delay."""
    with trio.move_on_after(2 * RETRY_BACKOFF.maximum) as waited:
        batch = await server.receive_batch()
        raise AssertionError(f"unexpected batch {batch!r}")
    assert waited.cancelled_caught


async def test_a_retriable_rejection_keeps_the_operation_queued_and_resends_it_later(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness() as h:
        good = await h.write("fine")
        bad = await h.write("validator throws")
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        await server.accept(await server.expect(Handshake))
        delta = await server.receive_batch()
        assert [op.id for op in delta.operations] == [good.id, bad.id]
        await server.send(refusal(bad))
        await server.ack(delta)
        refused_at = trio.current_time()

        # Another write is not held up by the refused one.
        later = await h.write("later")
        streamed = await server.receive_batch()
        assert [op.id for op in streamed.operations] == [later.id]
        await server.ack(streamed)
        await trio.testing.wait_all_tasks_blocked()
        assert await h.store.rejected_operations() == []
        assert [op.id for op in await h.store.pending()] == [bad.id]
        assert h.engine.pending_operations == 1
        (event,) = h.of("sync:operation-rejected")
        assert event["operation_id"] == bad.id
        assert event["code"] == "VALIDATION_ERROR"
        assert (event["retriable"], event["will_retry"], event["rejection"]) == (True, True, None)

        # Sent again after the first delay; refused again, the next delay is longer.
        again = await server.receive_batch()
        assert [op.id for op in again.operations] == [bad.id]
        assert trio.current_time() - refused_at >= RETRY_BACKOFF.table_delay(2)
        await server.send(refusal(bad, code="RATE_LIMIT"))
        await server.ack(again)
        refused_at = trio.current_time()
        third = await server.receive_batch()
        assert [op.id for op in third.operations] == [bad.id]
        assert trio.current_time() - refused_at >= RETRY_BACKOFF.table_delay(3)
        await server.ack(third)

        with trio.fail_after(60):
            await h.engine.wait_synced()
        assert await h.store.pending() == []
        assert await h.store.pending_count() == 0
        assert h.engine.pending_operations == 0
        assert await h.store.rejected_operations() == []
        assert [e["will_retry"] for e in h.of("sync:operation-rejected")] == [True, True]
        diagnostics = await h.engine.diagnostics()
        # good, bad, later, then bad twice more: a resent operation counts again.
        assert diagnostics.operations_sent == 5
        assert diagnostics.batches_acknowledged == 4
        assert (diagnostics.connection_attempts, diagnostics.connections) == (1, 1)
        acknowledged = sum(p["operations"] for p in h.of("sync:acknowledged"))  # type: ignore[misc]
        assert acknowledged == 3  # each operation is dequeued once, when it was accepted
        await no_more_batches(server)


async def test_a_new_connection_resends_the_refused_operation_in_its_delta(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness() as h:
        server = await h.streaming()
        bad = await h.write("rate limited")
        batch = await server.receive_batch()
        await server.send(refusal(bad, code="RATE_LIMIT"))
        await server.ack(batch)
        await trio.testing.wait_all_tasks_blocked()
        await server.transport.aclose()

        server = FakeServer(await h.network.accept())
        await server.accept(await server.expect(Handshake))
        delta = await server.receive_batch()
        assert [op.id for op in delta.operations] == [bad.id]
        await server.ack(delta)
        with trio.fail_after(60):
            await h.engine.wait_synced()
        assert await h.store.pending_count() == 0
        assert await h.store.rejected_operations() == []
        # Accepted at last: nothing is resent once the retry delay has passed.
        await no_more_batches(server)


async def test_a_permanent_rejection_still_moves_the_operation_to_the_rejected_list(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness() as h:
        server = await h.streaming()
        bad = await h.write("forbidden")
        batch = await server.receive_batch()
        await server.send(refusal(bad, code="FORBIDDEN", retriable=False))
        await server.ack(batch)
        with trio.fail_after(60):
            await h.engine.wait_synced()
        rejected = await h.store.rejected_operations()
        assert [(r.op_id, r.code, r.retriable) for r in rejected] == [(bad.id, "FORBIDDEN", False)]
        (event,) = h.of("sync:operation-rejected")
        assert (event["retriable"], event["will_retry"]) == (False, False)
        assert event["rejection"] == rejected[0]
        assert await h.store.pending_count() == 0
        await no_more_batches(server)  # never sent again


async def test_with_a_window_only_the_refused_operation_stays_queued(
    harness: HarnessFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(batch_size=1, window=3) as h:
        server = await h.streaming()
        ops = [await h.write(f"op-{n}") for n in range(3)]
        batches = [await server.receive_batch() for _ in ops]
        assert [b.operations[0].id for b in batches] == [op.id for op in ops]
        await server.send(refusal(ops[1], code="RATE_LIMIT"))
        for batch in batches:
            await server.ack(batch)
        await trio.testing.wait_all_tasks_blocked()
        assert [op.id for op in await h.store.pending()] == [ops[1].id]
        again = await server.receive_batch()
        assert [op.id for op in again.operations] == [ops[1].id]
        await server.ack(again)
        with trio.fail_after(60):
            await h.engine.wait_synced()
        assert await h.store.pending_count() == 0
        assert await h.store.rejected_operations() == []
        await no_more_batches(server)
