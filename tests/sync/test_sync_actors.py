"""Each actor of the engine on its own, wired by hand with bounded channels."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors import Mailbox
from kora.core.operation import Operation, OpType
from kora.core.version_vector import VersionVector
from kora.protocol.client import ClientSession, ClientState
from kora.protocol.json_codec import JsonCodec
from kora.protocol.messages import (
    Acknowledgment,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    OperationBatch,
)
from kora.store import LocalMutation, Store, open_store
from kora.store.errors import StoreFailedError
from kora.sync import MemoryNetwork, SyncOptions, Transport, TransportClosed
from kora.sync._messages import (
    Attached,
    BatchAcked,
    Detached,
    Link,
    OutboundMessage,
    QueueChanged,
    Streaming,
)
from kora.sync._view import ScopeMemo
from kora.sync.connection import ConnectionActor
from kora.sync.diagnostics import FrameReceived, FrameSent, MetricMessage, OperationsSent
from kora.sync.errors import ConnectionEnded
from kora.sync.handshake import AttemptRecord, HandshakeActor
from kora.sync.outbound import ChangeFlag, OutboundQueueActor
from kora.sync.receiver import ReceiverActor
from kora.sync.scheduler import connection_ended
from kora.sync.status import StatusBoard, SyncStatus
from kora.sync.transport import Frame

CODEC = JsonCodec()


@contextmanager
def raises_ended(match: str = "") -> Iterator[list[ConnectionEnded]]:
    """Expect the block to end the connection (directly or out of a nursery)."""
    found: list[ConnectionEnded] = []
    caught: BaseException | None = None
    try:
        yield found
    except (ConnectionEnded, ExceptionGroup) as exc:
        caught = exc
    if caught is None:
        pytest.fail("the connection did not end")
    ended = connection_ended(caught)
    assert not ended.reason.startswith("connection failed:"), caught
    assert match in ended.reason
    found.append(ended)


def response(**overrides: object) -> str:
    fields: dict[str, object] = {
        "message_id": "r1",
        "node_id": "srv",
        "version_vector": {},
        "schema_version": 1,
        "accepted": True,
        "selected_wire_format": "json",
        "server_max_delivery_sequence": 0,
    }
    fields.update(overrides)
    return CODEC.encode(HandshakeResponse(**fields))  # type: ignore[arg-type]


def drain(channel: trio.MemoryReceiveChannel[MetricMessage]) -> list[MetricMessage]:
    got = []
    while True:
        try:
            got.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return got


async def insert(store: Store, title: str) -> Operation:
    return await store.write_local(
        LocalMutation(type=OpType.INSERT, collection="todos", data={"title": title})
    )


# ------------------------------------------------------------------------ ConnectionActor


async def test_connection_actor_pumps_frames_and_reports_the_close() -> None:
    network = MemoryNetwork()
    out_send, out_receive = trio.open_memory_channel[Frame](4)
    in_send, in_receive = trio.open_memory_channel[Frame](4)
    metrics_send, metrics_receive = trio.open_memory_channel[MetricMessage](16)
    actor = ConnectionActor(
        factory=network, frames_out=out_receive, frames_in=in_send, metrics=metrics_send
    )
    with raises_ended("server went away"):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            peer = await network.accept()
            await out_send.send("to-server")
            assert await peer.receive() == "to-server"
            await peer.send("to-client")
            assert await in_receive.receive() == "to-client"
            peer.close("server went away")
    assert drain(metrics_receive) == [FrameSent(9), FrameReceived(9)]
    assert not network.open_connections


async def test_connection_actor_fails_its_start_when_it_cannot_connect() -> None:
    @asynccontextmanager
    async def refused() -> AsyncIterator[Transport]:
        await trio.lowlevel.checkpoint()
        raise TransportClosed("connection refused")
        yield  # pragma: no cover

    _, out_receive = trio.open_memory_channel[Frame](1)
    in_send, _ = trio.open_memory_channel[Frame](1)
    metrics_send, _ = trio.open_memory_channel[MetricMessage](1)
    actor = ConnectionActor(
        factory=refused, frames_out=out_receive, frames_in=in_send, metrics=metrics_send
    )
    with raises_ended("could not connect: connection refused"):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)


async def test_connection_actor_closes_the_transport_when_stopped() -> None:
    network = MemoryNetwork()
    _, out_receive = trio.open_memory_channel[Frame](1)
    in_send, _ = trio.open_memory_channel[Frame](1)
    metrics_send, _ = trio.open_memory_channel[MetricMessage](1)
    actor = ConnectionActor(
        factory=network, frames_out=out_receive, frames_in=in_send, metrics=metrics_send
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        peer = await network.accept()
        nursery.cancel_scope.cancel()
    assert peer.closed
    with pytest.raises(TransportClosed):
        await peer.receive()


# ------------------------------------------------------------------------ HandshakeActor


class HandshakeRig:
    def __init__(self, store: Store, **options: object) -> None:
        self.store = store
        schema_version = options.get("schema_version", 1)
        assert isinstance(schema_version, int)
        self.session = ClientSession(
            node_id=store.node_id, binary=False, schema_version=schema_version
        )
        self.frames_out = Mailbox[Frame](8)
        self.link = Link(1, self.session, self.frames_out)
        self.in_send, in_receive = trio.open_memory_channel[Frame](8)
        self.out_receive = self.frames_out.receiver()
        self.outbound_send, self.outbound = trio.open_memory_channel[OutboundMessage](8)
        metrics_send, self.metrics = trio.open_memory_channel[MetricMessage](8)
        self.board = StatusBoard()
        self.events: list[tuple[str, object]] = []
        self.attempt = AttemptRecord(number=1)
        self.scope_memo = ScopeMemo()
        self.actor = HandshakeActor(
            link=self.link,
            store=store,
            options=SyncOptions(url="memory://", **options),  # type: ignore[arg-type]
            frames_in=in_receive,
            frames_out=self.frames_out.sender(),
            outbound=self.outbound_send,
            metrics=metrics_send,
            board=self.board,
            emit=lambda name, payload: self.events.append((name, dict(payload))),
            scope_memo=self.scope_memo,
            attempt=self.attempt,
            wall_clock_ms=lambda: 1_000_000_000_000,
        )

    async def run_accepting(self, server_frame: str) -> Attached:
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                CODEC.decode(await self.out_receive.receive())
                await self.in_send.send(server_frame)
                attached = await self.outbound.receive()
                assert isinstance(attached, Attached)
                attached.delta_sent.set()
                self.attached = attached

            nursery.start_soon(serve)
            await nursery.start(self.actor.run)
        return self.attached


async def test_handshake_actor_accepts_and_adopts_the_scope() -> None:
    tokens = iter(["t1"])

    async def auth() -> str:
        return next(tokens)

    async with open_store(None) as store:
        await store.set_delivery_watermark("", 7)
        rig = HandshakeRig(store, auth=auth)
        scope = {"todos": {"userId": "alice"}}
        attached = await rig.run_accepting(
            response(accepted_scope=scope, version_vector={"srv": 4})
        )
        assert rig.session.state is ClientState.SYNCING
        assert attached.server_vector == VersionVector.from_wire({"srv": 4})
        assert rig.scope_memo.scope == scope
        assert rig.attempt.accepted
        assert rig.board.snapshot.status is SyncStatus.CONNECTED
        assert [name for name, _ in rig.events] == ["sync:connected"]
        # The scope differs from the one we sent: the watermark of the new view starts at 0.
        assert rig.session.watermark == 0


async def test_handshake_actor_sends_token_vector_and_watermark() -> None:
    async def auth() -> str:
        return "secret"

    async with open_store(None) as store:
        await insert(store, "x")
        await store.set_delivery_watermark("", 3)
        rig = HandshakeRig(store, auth=auth, schema_version=2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rig.actor.run)
            handshake = CODEC.decode(await rig.out_receive.receive())
            nursery.cancel_scope.cancel()
    assert isinstance(handshake, Handshake)
    assert handshake.auth_token == "secret"
    assert handshake.version_vector == {store.node_id: 1}
    assert handshake.last_delivery_sequence == 3
    assert handshake.schema_version == 2
    assert handshake.supported_wire_formats == ("json",)


@pytest.mark.parametrize(
    ("server_frame", "expected"),
    [
        (
            response(accepted=False, reject_reason="SCHEMA_MISMATCH: no", schema_version=2),
            {"fatal": True, "retry": False, "auth_failed": False},
        ),
        (
            CODEC.encode(
                ErrorMessage(message_id="e", code="AUTH_FAILED", message="no", retriable=False)
            ),
            {"fatal": False, "retry": False, "auth_failed": True},
        ),
        (
            CODEC.encode(
                ErrorMessage(message_id="e", code="MAX_CONNECTIONS", message="full", retriable=True)
            ),
            {"fatal": False, "retry": True, "auth_failed": False},
        ),
    ],
)
async def test_handshake_actor_refusals(server_frame: str, expected: dict[str, bool]) -> None:
    async with open_store(None) as store:
        rig = HandshakeRig(store)
        with raises_ended() as caught:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rig.actor.run)
                await rig.out_receive.receive()
                await rig.in_send.send(server_frame)
    ended = caught[0]
    assert {"fatal": ended.fatal, "retry": ended.retry, "auth_failed": ended.auth_failed} == (
        expected
    )
    assert rig.board.snapshot.status is SyncStatus.OFFLINE


async def test_handshake_actor_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with open_store(None) as store:
        rig = HandshakeRig(store, connect_timeout=5.0)
        start = trio.current_time()
        with raises_ended("no handshake-response within 5.0 s"):
            await rig.actor.run()
        assert trio.current_time() - start == 5.0


async def test_handshake_actor_rebases_queued_operations_of_a_fast_clock() -> None:
    server_now = 1_000_000_000_000
    async with open_store(None, physical_clock=lambda: server_now + 120_000) as store:
        before = await insert(store, "from the future")
        rig = HandshakeRig(store)
        await rig.run_accepting(response(server_time=server_now))
        (after,) = await store.pending()
    assert after.sequence_number == before.sequence_number
    assert after.timestamp.wall_time == server_now
    assert [name for name, _ in rig.events] == [
        "sync:clock-skew",
        "sync:clock-rebase",
        "sync:connected",
    ]
    assert rig.events[0][1] == {
        "skew_ms": 0,
        "lead_ms": 120_000,
        "severity": "fast",
        "rebased": True,
        "operations": 1,
    }
    assert rig.events[1][1] == {"skew_ms": 0, "operations": 1}


async def test_handshake_actor_reports_a_fast_clock_with_nothing_to_rebase() -> None:
    server_now = 1_000_000_000_000
    async with open_store(None, physical_clock=lambda: server_now + 120_000) as store:
        op = await insert(store, "sent long ago")
        await store.acknowledge([op.id])
        rig = HandshakeRig(store)
        await rig.run_accepting(response(server_time=server_now))
        # The store's clock was brought back all the same.
        assert await store.last_timestamp() is None
    (skew,) = [payload for name, payload in rig.events if name == "sync:clock-skew"]
    assert skew == {
        "skew_ms": 0,
        "lead_ms": 120_000,
        "severity": "fast",
        "rebased": False,
        "operations": 0,
    }
    assert "sync:clock-rebase" not in [name for name, _ in rig.events]


async def test_handshake_actor_warns_of_a_slow_clock() -> None:
    async with open_store(None) as store:
        rig = HandshakeRig(store)  # its wall clock says 1_000_000_000_000
        await rig.run_accepting(response(server_time=1_000_000_000_000 + 700_000))
    (skew,) = [payload for name, payload in rig.events if name == "sync:clock-skew"]
    assert skew == {"skew_ms": 700_000, "severity": "slow-warning"}


# ------------------------------------------------------------------------ ReceiverActor


class ReceiverRig:
    def __init__(self, store: Store, *, ack_timeout: float = 30.0) -> None:
        self.session = ClientSession(node_id=store.node_id, binary=False)
        self.session.handshake(version_vector={})
        self.session.receive_frame(response())
        self.frames_out = Mailbox[Frame](8)
        self.out_receive = self.frames_out.receiver()
        self.link = Link(5, self.session, self.frames_out)
        self.in_send, in_receive = trio.open_memory_channel[Frame](8)
        self.outbound_send, self.outbound = trio.open_memory_channel[OutboundMessage](8)
        metrics_send, self.metrics = trio.open_memory_channel[MetricMessage](8)
        self.events: list[tuple[str, object]] = []
        self.actor = ReceiverActor(
            link=self.link,
            store=store,
            view="",
            ack_timeout=ack_timeout,
            frames_in=in_receive,
            frames_out=self.frames_out.sender(),
            outbound=self.outbound_send,
            metrics=metrics_send,
            board=StatusBoard(),
            emit=lambda name, payload: self.events.append((name, dict(payload))),
        )


async def test_receiver_applies_acknowledges_and_forwards_our_acks() -> None:
    async with open_store(None) as other, open_store(None) as store:
        op = await other.write_local(
            LocalMutation(type=OpType.INSERT, collection="todos", data={"n": 1})
        )
        rig = ReceiverRig(store)
        (ours,) = rig.session.send_batch([], is_final=True, total_batches=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.actor.run)
            batch = OperationBatch(
                message_id="d1",
                operations=(op,),
                is_final=True,
                batch_index=0,
                base_delivery_sequence=0,
                max_delivery_sequence=1,
            )
            await rig.in_send.send(CODEC.encode(batch))
            ack = CODEC.decode(await rig.out_receive.receive())
            assert isinstance(ack, Acknowledgment)
            assert (ack.acknowledged_message_id, ack.delivery_sequence) == ("d1", 1)
            assert await store.get("todos", op.record_id) is not None
            assert await store.delivery_watermark("") == 1
            await rig.in_send.send(
                CODEC.encode(
                    Acknowledgment(
                        message_id="a1",
                        acknowledged_message_id=ours.message.message_id,
                        last_sequence_number=0,
                    )
                )
            )
            acked = await rig.outbound.receive()
            assert isinstance(acked, BatchAcked)
            assert (acked.link_id, acked.message_id) == (5, ours.message.message_id)
            assert isinstance(await rig.outbound.receive(), Streaming)
            nursery.cancel_scope.cancel()
        assert [name for name, _ in rig.events] == ["sync:received"]


def delivery(message_id: str, ops: tuple[Operation, ...], base: int, top: int) -> str:
    return CODEC.encode(
        OperationBatch(
            message_id=message_id,
            operations=ops,
            is_final=False,
            batch_index=0,
            base_delivery_sequence=base,
            max_delivery_sequence=top,
        )
    )


async def test_receiver_applies_waiting_batches_in_one_transaction() -> None:
    async with open_store(None) as other, open_store(None) as store:
        ops = [
            await other.write_local(
                LocalMutation(type=OpType.INSERT, collection="todos", data={"n": n})
            )
            for n in range(3)
        ]
        rig = ReceiverRig(store)
        calls: list[tuple[int, object]] = []
        apply_remote = store.apply_remote

        async def counting(operations: object, **kwargs: object) -> object:
            batch = list(operations)  # type: ignore[call-overload]
            calls.append((len(batch), kwargs.get("watermark")))
            return await apply_remote(batch, **kwargs)  # type: ignore[arg-type]

        store.apply_remote = counting  # type: ignore[method-assign]
        # Three batches are waiting when the receiver starts: one group.
        await rig.in_send.send(delivery("d1", (ops[0],), 0, 1))
        await rig.in_send.send(delivery("d2", (ops[1],), 1, 2))
        await rig.in_send.send(delivery("d3", (ops[2],), 2, 5))
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.actor.run)
            acks = [CODEC.decode(await rig.out_receive.receive()) for _ in range(3)]
            nursery.cancel_scope.cancel()
        assert calls == [(3, ("", 5))]
        assert [(a.acknowledged_message_id, a.delivery_sequence) for a in acks] == [  # type: ignore[union-attr]
            ("d1", 1),
            ("d2", 2),
            ("d3", 5),
        ]
        assert await store.delivery_watermark("") == 5
        assert [len(p["operations"]) for n, p in rig.events if n == "sync:received"] == [3]  # type: ignore[arg-type]


async def test_receiver_acknowledges_a_batch_without_operations_without_a_commit(
    tmp_path: Any,
) -> None:
    """An empty delivery batch only moves the watermark: acknowledged at once, the watermark
    written with the store's next call (unsynced), not by a transaction of its own."""
    path = str(tmp_path / "b.db")
    async with open_store(None) as other, open_store(path) as store:
        op = await other.write_local(
            LocalMutation(type=OpType.INSERT, collection="todos", data={"n": 1})
        )
        rig = ReceiverRig(store)
        calls: list[int] = []
        apply_remote = store.apply_remote

        async def counting(operations: Any, **kwargs: Any) -> object:
            batch = list(operations)
            calls.append(len(batch))
            return await apply_remote(batch, **kwargs)

        store.apply_remote = counting  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.actor.run)
            await rig.in_send.send(delivery("d1", (op,), 0, 1))
            first = CODEC.decode(await rig.out_receive.receive())
            await rig.in_send.send(delivery("d2", (), 1, 7))
            second = CODEC.decode(await rig.out_receive.receive())
            nursery.cancel_scope.cancel()
        assert [(a.acknowledged_message_id, a.delivery_sequence) for a in (first, second)] == [  # type: ignore[union-attr]
            ("d1", 1),
            ("d2", 7),
        ]
        assert calls == [1]
        assert [name for name, _ in rig.events] == ["sync:received"]
        assert await store.delivery_watermark("") == 7  # a read writes it first
    async with open_store(path) as reopened:
        assert await reopened.delivery_watermark("") == 7


async def test_receiver_decodes_what_arrives_while_a_group_commits() -> None:
    async with open_store(None) as other, open_store(":memory:") as store:
        ops = [
            await other.write_local(
                LocalMutation(type=OpType.INSERT, collection="todos", data={"n": n})
            )
            for n in range(2)
        ]
        rig = ReceiverRig(store)
        committing: list[str] = []  # the group whose commit runs
        decoded: list[tuple[str, list[str]]] = []  # (frame, what was committing meanwhile)
        d2_decoded = threading.Event()
        apply_remote = store.apply_remote

        async def slow_commits(operations: Any, **kwargs: Any) -> object:
            group = [op.id for op in operations]
            if group == [ops[0].id]:  # d2 arrives while d1's group is being stored
                rig.in_send.send_nowait(delivery("d2", (ops[1],), 1, 2))
            began = kwargs["before_commit"]

            def commit_begins() -> None:  # in the store's thread
                committing.append("d1" if group == [ops[0].id] else "d2")
                began()
                if group == [ops[0].id]:
                    d2_decoded.wait(5)  # a commit long enough for the receiver to decode d2

            result = await apply_remote(operations, **{**kwargs, "before_commit": commit_begins})
            committing.clear()
            return result

        receive_frame = rig.session.receive_frame

        def recording(frame: Frame) -> list[Any]:
            decoded.append((json.loads(frame)["messageId"], list(committing)))
            if decoded[-1][0] == "d2":
                d2_decoded.set()
            return receive_frame(frame)

        store.apply_remote = slow_commits  # type: ignore[method-assign]
        rig.session.receive_frame = recording  # type: ignore[method-assign]
        await rig.in_send.send(delivery("d1", (ops[0],), 0, 1))
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.actor.run)
            acks = [CODEC.decode(await rig.out_receive.receive()) for _ in range(2)]
            nursery.cancel_scope.cancel()
        # d2 was decoded during d1's commit, then applied (and acknowledged) after d1, in
        # its own transaction.
        assert decoded == [("d1", []), ("d2", ["d1"])]
        assert [(a.acknowledged_message_id, a.delivery_sequence) for a in acks] == [  # type: ignore[union-attr]
            ("d1", 1),
            ("d2", 2),
        ]
        assert await store.delivery_watermark("") == 2
        assert await store.count("todos") == 2


async def test_receiver_keeps_applying_while_its_acknowledgments_cannot_leave() -> None:
    """A server that does not read while it streams must not stall us: with the outgoing
    mailbox full, the receiver goes on applying, keeps only the newest delivery
    acknowledgment (they are cumulative) and sends it once there is room."""
    async with open_store(None) as other, open_store(None) as store:
        ops = [
            await other.write_local(
                LocalMutation(type=OpType.INSERT, collection="todos", data={"n": n})
            )
            for n in range(20)
        ]
        rig = ReceiverRig(store)

        async def diagnostics() -> None:  # as the diagnostics actor does
            async for _ in rig.metrics:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(diagnostics)
            await nursery.start(rig.actor.run)
            with rig.frames_out.sender() as filler:
                while True:  # nobody reads the socket: the mailbox fills up
                    try:
                        filler.send_nowait("blocked")
                    except trio.WouldBlock:
                        break
            for n, op in enumerate(ops):
                await rig.in_send.send(delivery(f"d{n}", (op,), n, n + 1))
                await trio.testing.wait_all_tasks_blocked()
            assert await store.delivery_watermark("") == 20  # everything applied
            received = [p for name, p in rig.events if name == "sync:received"]
            assert sum(len(p["operations"]) for p in received) == 20  # type: ignore[arg-type]
            sent = [await rig.out_receive.receive() for _ in range(8)]
            assert sent == ["blocked"] * 8
            await trio.testing.wait_all_tasks_blocked()
            acks = []
            while True:
                try:
                    acks.append(CODEC.decode(rig.out_receive.receive_nowait()))
                except trio.WouldBlock:
                    break
            # The first one was already on its way; the newest covers all the others.
            assert [a.delivery_sequence for a in acks] == [1, 20]  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_receiver_acknowledges_nothing_when_the_store_fails() -> None:
    async with open_store(None) as other, open_store(None) as store:
        op = await other.write_local(LocalMutation(type=OpType.INSERT, collection="todos", data={}))
        rig = ReceiverRig(store)

        async def failing(operations: object, **kwargs: object) -> object:
            raise StoreFailedError("disk full")

        store.apply_remote = failing  # type: ignore[method-assign]
        await rig.in_send.send(delivery("d1", (op,), 0, 1))
        await rig.in_send.send(delivery("d2", (), 1, 2))
        with raises_ended("disk full"):
            await rig.actor.run()
        assert rig.out_receive.statistics().current_buffer_used == 0
        assert await store.delivery_watermark("") == 0


async def test_receiver_ends_the_connection_on_auth_failure() -> None:
    async with open_store(None) as store:
        rig = ReceiverRig(store)
        await rig.in_send.send(
            CODEC.encode(
                ErrorMessage(message_id="e", code="AUTH_FAILED", message="expired", retriable=False)
            )
        )
        with pytest.raises(ConnectionEnded, match="expired") as caught:  # not in a group
            await rig.actor.run()
        assert caught.value.auth_failed


async def test_receiver_ack_watchdog(autojump_clock: trio.testing.MockClock) -> None:
    async with open_store(None) as store:
        rig = ReceiverRig(store, ack_timeout=30.0)
        (ours,) = rig.session.send_batch([], is_final=True)
        start = trio.current_time()
        with raises_ended("Timed out waiting for acknowledgment"):
            await rig.actor.run()
        assert trio.current_time() - start == pytest.approx(30.0)
        assert rig.session.in_flight[0].message_id == ours.message.message_id


# ------------------------------------------------------------------------ OutboundQueueActor


async def test_outbound_actor_sends_the_delta_and_dequeues_on_ack() -> None:
    async with open_store(None) as store:
        for n in range(3):
            await insert(store, f"t{n}")
        inbox_send, inbox = trio.open_memory_channel[OutboundMessage](8)
        metrics_send, metrics = trio.open_memory_channel[MetricMessage](32)
        board = StatusBoard()
        events: list[str] = []
        actor = OutboundQueueActor(
            store=store,
            batch_size=2,
            inbox=inbox,
            metrics=metrics_send,
            board=board,
            emit=lambda name, payload: events.append(name),
            changed=ChangeFlag(),
        )
        session = ClientSession(node_id=store.node_id, binary=False, window=4)
        session.handshake(version_vector={})
        session.receive_frame(response())
        frames = Mailbox[Frame](8)
        link = Link(9, session, frames)
        sent = frames.receiver()
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            assert board.snapshot.pending_operations == 3
            await inbox_send.send(Attached(link, VersionVector()))
            batches = [CODEC.decode(await sent.receive()) for _ in range(2)]
            assert [len(b.operations) for b in batches] == [2, 1]  # type: ignore[union-attr]
            for batch in batches:
                await inbox_send.send(BatchAcked(9, batch.message_id, trio.current_time()))
            await inbox_send.send(BatchAcked(99, "stale", trio.current_time()))  # ignored
            await trio.testing.wait_all_tasks_blocked()
            assert await store.pending_count() == 0
            assert board.snapshot.pending_operations == 0
            await inbox_send.send(Detached(9))
            await insert(store, "after")
            await inbox_send.send(QueueChanged())
            await trio.testing.wait_all_tasks_blocked()
            assert sent.statistics().current_buffer_used == 0  # detached: nothing sent
            assert board.snapshot.pending_operations == 1
            nursery.cancel_scope.cancel()
        assert [m for m in drain(metrics) if isinstance(m, OperationsSent)] == [
            OperationsSent(2),
            OperationsSent(1),
        ]
        assert events.count("sync:sent") == 2
        assert events.count("sync:acknowledged") == 2


async def test_outbound_actor_keeps_the_queue_in_memory_and_dequeues_acks_together() -> None:
    async with open_store(None) as store:
        reads: list[str] = []
        acknowledged: list[int] = []
        pending, acknowledge = store.pending, store.acknowledge

        async def counting_pending(limit: int | None = None) -> list[Operation]:
            reads.append("pending")
            return await pending(limit)

        gate = trio.Event()  # holds the first dequeue, as a slow disk would

        async def counting_acknowledge(op_ids: object, **kwargs: bool) -> int:
            ids = list(op_ids)  # type: ignore[call-overload]
            acknowledged.append(len(ids))
            await gate.wait()
            return await acknowledge(ids, **kwargs)

        store.pending = counting_pending  # type: ignore[method-assign]
        store.acknowledge = counting_acknowledge  # type: ignore[method-assign]
        inbox_send, inbox = trio.open_memory_channel[OutboundMessage](32)
        metrics_send, _metrics = trio.open_memory_channel[MetricMessage](64)
        board = StatusBoard()
        events: list[tuple[str, object]] = []
        actor = OutboundQueueActor(
            store=store,
            batch_size=100,
            inbox=inbox,
            metrics=metrics_send,
            board=board,
            emit=lambda name, payload: events.append((name, dict(payload))),
            changed=ChangeFlag(),
        )
        session = ClientSession(node_id=store.node_id, binary=False, window=4)
        session.handshake(version_vector={})
        session.receive_frame(response())
        frames = Mailbox[Frame](16)
        sent = frames.receiver()

        def acked(batch: OperationBatch) -> BatchAcked:
            ack = Acknowledgment(
                message_id=f"a-{batch.message_id}",
                acknowledged_message_id=batch.message_id,
                last_sequence_number=0,
            )
            session.receive_frame(CODEC.encode(ack))  # as the receiver does
            return BatchAcked(3, batch.message_id, trio.current_time())

        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await inbox_send.send(Attached(Link(3, session, frames), VersionVector()))
            delta = CODEC.decode(await sent.receive())
            assert isinstance(delta, OperationBatch)
            assert delta.operations == ()
            await inbox_send.send(acked(delta))
            written, batches = [], []
            for n in range(4):
                written.append(await insert(store, f"t{n}"))
                assert board.snapshot.pending_operations == n + 1  # counted at the commit
                await inbox_send.send(QueueChanged())
                batches.append(CODEC.decode(await sent.receive()))
            assert [op.id for b in batches for op in b.operations] == [op.id for op in written]  # type: ignore[union-attr]
            # The other acknowledgments arrive while the first dequeue is in flight: the
            # next batches go out meanwhile, and one more transaction dequeues all three.
            for batch in batches:
                assert isinstance(batch, OperationBatch)
                await inbox_send.send(acked(batch))
            await trio.testing.wait_all_tasks_blocked()
            assert board.snapshot.pending_operations == 4  # not durably dequeued yet
            assert len(await pending()) == 4
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert await pending() == []
            assert board.snapshot.pending_operations == 0
            nursery.cancel_scope.cancel()
        assert reads == ["pending", "pending"]  # at start and at the attach, never per write
        # The first dequeue (held at the gate) took what had arrived when it started; one
        # more transaction took all the acknowledgments that came in meanwhile.
        assert sum(acknowledged) == 4
        assert len(acknowledged) == 2
        acked = [p for name, p in events if name == "sync:acknowledged"]
        assert [p["operations"] for p in acked] == [0, 1, 1, 1, 1]  # type: ignore[index]
