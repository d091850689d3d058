"""A client whose clock runs ten minutes fast, against a server that checks timestamps.

The scripted server refuses, as the Kora server does (spec 8.4), every operation whose
wall time is more than 60 s ahead of its own time, with ``operation-rejected``
``INVALID_TIMESTAMP``.  The engine has the store re-stamp such queued operations when the
handshake-response tells it the server's time (spec 3.8), so they are accepted.
"""

from __future__ import annotations

import attrs
import trio
from sync_fakes import FakeServer, HarnessFactory, server_message_id

from kora.core.hlc import check_ingest_bounds
from kora.core.operation import Operation
from kora.protocol.messages import Handshake, OperationBatch, OperationRejected
from kora.store import open_store

SERVER_NOW = 1_700_000_000_000
TEN_MINUTES = 600_000


@attrs.define
class TimestampCheckingServer:
    """The server end of one connection: accepts, then checks every operation's clock."""

    server: FakeServer
    accepted: list[Operation] = attrs.field(factory=list)
    refused: list[Operation] = attrs.field(factory=list)

    async def handshake(self, *, server_time: int | None) -> Handshake:
        handshake = await self.server.expect(Handshake)
        await self.server.accept(handshake, server_time=server_time)
        return handshake

    async def take_batch(self) -> OperationBatch:
        batch = await self.server.receive_batch()
        for op in batch.operations:
            try:
                check_ingest_bounds(op.timestamp, SERVER_NOW, operation_id=op.id)
            except ValueError as exc:
                self.refused.append(op)
                await self.server.send(
                    OperationRejected(
                        message_id=server_message_id(),
                        operation_id=op.id,
                        collection=op.collection,
                        record_id=op.record_id,
                        code="INVALID_TIMESTAMP",
                        message=str(exc),
                        retriable=False,
                    )
                )
            else:
                self.accepted.append(op)
        await self.server.ack(batch)
        return batch


def fast_clock() -> int:
    return SERVER_NOW + TEN_MINUTES


async def test_a_fast_client_gets_its_queued_operations_accepted(
    harness: HarnessFactory,
) -> None:
    async with open_store(None, physical_clock=fast_clock) as store, harness(store=store) as h:
        queued = [await h.write(f"offline-{n}") for n in range(3)]
        assert all(op.timestamp.wall_time == SERVER_NOW + TEN_MINUTES for op in queued)
        await h.engine.connect()
        server = TimestampCheckingServer(FakeServer(await h.network.accept()))
        await server.handshake(server_time=SERVER_NOW)
        await server.take_batch()
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert server.refused == []
        assert [op.sequence_number for op in server.accepted] == [1, 2, 3]
        assert [op.data for op in server.accepted] == [op.data for op in queued]
        assert all(op.verify_id() for op in server.accepted)
        assert {op.id for op in server.accepted}.isdisjoint(op.id for op in queued)
        assert await store.pending_count() == 0
        assert await store.rejected_operations() == []
        # Later writes are stamped near the server's time, not ten minutes ahead again.
        live = await h.write("live")
        await server.take_batch()
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert server.accepted[-1] == live
        assert server.refused == []
    (skew,) = h.of("sync:clock-skew")
    # skew_ms compares with the machine's real clock, which this test does not control.
    assert {key: value for key, value in skew.items() if key != "skew_ms"} == {
        "lead_ms": TEN_MINUTES,
        "severity": "fast",
        "rebased": True,
        "operations": 3,
    }
    (rebase,) = h.of("sync:clock-rebase")
    assert rebase["operations"] == 3
    names = h.names()
    assert names.index("sync:clock-rebase") < names.index("sync:connected")


async def test_without_the_server_time_the_fast_operations_are_refused(
    harness: HarnessFactory,
) -> None:
    # The control: the same client, but the server does not say its time, so nothing tells
    # the engine to rebase, and the server refuses the operations.
    async with open_store(None, physical_clock=fast_clock) as store, harness(store=store) as h:
        queued = [await h.write(f"offline-{n}") for n in range(2)]
        await h.engine.connect()
        server = TimestampCheckingServer(FakeServer(await h.network.accept()))
        await server.handshake(server_time=None)
        await server.take_batch()
        with trio.fail_after(5):
            await h.engine.wait_synced()
        assert server.refused == queued
        rejected = await store.rejected_operations()
        assert sorted((r.op_id, r.code) for r in rejected) == sorted(
            (op.id, "INVALID_TIMESTAMP") for op in queued
        )
    assert h.of("sync:clock-skew") == []
    assert [p["code"] for p in h.of("sync:operation-rejected")] == ["INVALID_TIMESTAMP"] * 2
