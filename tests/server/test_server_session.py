"""SyncSession in process, over an in-memory transport, in virtual time.

The session drives ``kora.protocol.ServerSession``; these tests check what the server adds
around it: the codes and close codes it answers with, the store and hub, redelivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from kora.core.canonical import json_stringify
from kora.core.hlc import HLCTimestamp
from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.core.operations import create_operation, operation_to_wire
from kora.server import MemoryServerStore, ServerLimits
from kora.server.context import ServerContext
from kora.server.session import SyncSession, refuse_connection
from kora.server.transport import Frame, TransportClosed

#: Seconds of virtual time any single wait may take.
WAIT = 30.0


def make_op(node: str, seq: int) -> Operation:
    return create_operation(
        type="insert",
        node_id=node,
        collection="todos",
        record_id=f"{node}-{seq}",
        data={"title": f"op-{seq}"},
        previous_data=None,
        timestamp=HLCTimestamp(time.time_ns() // 1_000_000, 0, node),
        sequence_number=seq,
    )


def handshake(node: str, *, last_delivery_sequence: int | None = 0) -> str:
    frame: dict[str, Any] = {
        "type": "handshake",
        "messageId": f"h-{uuid7()}",
        "nodeId": node,
        "versionVector": {},
        "schemaVersion": 1,
        "supportedWireFormats": ["json"],
    }
    if last_delivery_sequence is not None:
        frame["lastDeliverySequence"] = last_delivery_sequence
    return json_stringify(frame)


def batch(wires: list[Any], message_id: str = "b") -> str:
    return json_stringify(
        {
            "type": "operation-batch",
            "messageId": message_id,
            "operations": wires,
            "isFinal": True,
            "batchIndex": 0,
        }
    )


def ack(acknowledged: str, delivery_sequence: int | None) -> str:
    frame: dict[str, Any] = {
        "type": "acknowledgment",
        "messageId": f"a-{uuid7()}",
        "acknowledgedMessageId": acknowledged,
        "lastSequenceNumber": 0,
    }
    if delivery_sequence is not None:
        frame["deliverySequence"] = delivery_sequence
    return json_stringify(frame)


class PipeTransport:
    """Both ends of a connection: the session's ``FrameTransport`` and the test's peer."""

    name = "websocket"

    def __init__(self) -> None:
        self._in_send, self._in_receive = trio.open_memory_channel[Frame](64)
        self._out_send, self._out_receive = trio.open_memory_channel[Frame](4096)
        self.close_code: int | None = None

    # -- the session's side

    async def receive(self) -> Frame:
        try:
            return await self._in_receive.receive()
        except trio.EndOfChannel:
            raise TransportClosed(1000) from None

    async def send(self, frame: Frame) -> None:
        if self.close_code is not None:
            raise TransportClosed(self.close_code)
        await self._out_send.send(frame)

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self._out_send.close()

    # -- the client's side

    async def put(self, frame: str) -> None:
        await self._in_send.send(frame)

    async def get(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            return dict(json.loads(await self._out_receive.receive()))

    async def get_until(self, kind: str) -> list[dict[str, Any]]:
        messages = [await self.get()]
        while messages[-1]["type"] != kind:
            messages.append(await self.get())
        return messages

    async def nothing_within(self, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            await self._out_receive.receive()
            return False
        return True

    async def closed_with(self) -> int:
        with trio.fail_after(WAIT):
            async for _ in self._out_receive:
                pass
        assert self.close_code is not None
        return self.close_code


@attrs.frozen
class Env:
    ctx: ServerContext
    store: MemoryServerStore
    nursery: trio.Nursery

    def connect(self) -> PipeTransport:
        pipe = PipeTransport()
        self.nursery.start_soon(SyncSession(self.ctx, pipe, session_id=uuid7()).run)
        return pipe

    async def commit(self, *ops: Operation) -> None:
        result = await self.store.append_batch(list(ops))
        self.ctx.hub.publish(result.max_delivery_sequence)


@asynccontextmanager
async def server(**limits: Any) -> AsyncIterator[Env]:
    limits.setdefault("ping_interval", None)
    async with MemoryServerStore() as store, trio.open_nursery() as nursery:
        ctx = ServerContext(
            store=store,
            auth=None,
            schema=None,
            schema_range=(1, 1),
            batch_size=100,
            limits=ServerLimits(**limits),
            allowed_origins=None,
        )
        yield Env(ctx, store, nursery)
        ctx.shutdown.set()


async def test_a_batch_over_the_operation_cap_is_batch_too_large(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server(max_batch_operations=3) as env:
        client = env.connect()
        await client.put(handshake("n"))
        await client.get_until("operation-batch")
        await client.put(batch([operation_to_wire(make_op("n", s)) for s in range(1, 5)]))
        error = await client.get()
        assert (error["type"], error["code"], error["retriable"]) == (
            "error",
            "BATCH_TOO_LARGE",
            False,
        )
        assert await client.closed_with() == 1009
        assert await env.store.operation_count() == 0


async def test_a_batch_that_ends_with_a_malformed_operation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as env:
        client = env.connect()
        await client.put(handshake("n"))
        await client.get_until("operation-batch")
        broken = operation_to_wire(make_op("n", 2))
        del broken["causalDeps"]
        await client.put(batch([operation_to_wire(make_op("n", 1)), broken]))
        rejected, acknowledgment = await client.get_until("acknowledgment")
        assert (rejected["operationId"], rejected["code"]) == (broken["id"], "INVALID_OPERATION")
        assert (acknowledgment["acknowledgedMessageId"], acknowledgment["lastSequenceNumber"]) == (
            "b",
            2,
        )
        assert await env.store.operation_count() == 1


async def test_a_watermark_beyond_the_log_restarts_and_says_where_the_log_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as env:
        existing = make_op("writer", 1)
        await env.commit(existing)
        client = env.connect()
        await client.put(handshake("reader", last_delivery_sequence=50))
        response, first = await client.get_until("operation-batch")
        assert response["serverMaxDeliverySequence"] == 1  # below 50: the client resets
        assert (first["baseDeliverySequence"], first["maxDeliverySequence"]) == (0, 1)
        assert [op["id"] for op in first["operations"]] == [existing.id]


async def test_a_client_error_before_the_handshake_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as env:
        client = env.connect()
        await client.put(
            '{"type":"error","messageId":"e","code":"X","message":"m","retriable":false}'
        )
        await client.put(handshake("n"))
        assert (await client.get())["accepted"] is True


async def test_no_handshake_in_time(autojump_clock: trio.testing.MockClock) -> None:
    async with server(handshake_timeout=10) as env:
        client = env.connect()
        error = await client.get()
        assert (error["code"], error["retriable"]) == ("HANDSHAKE_TIMEOUT", True)
        assert await client.closed_with() == 4401


async def test_stalled_delivery_is_sent_again_until_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server(redelivery_interval=2) as env:
        client = env.connect()
        await client.put(handshake("reader"))
        (_, final) = await client.get_until("operation-batch")
        await client.put(ack(final["messageId"], final["maxDeliverySequence"]))
        await env.commit(make_op("writer", 1))
        first = await client.get()
        await env.commit(make_op("writer", 2))
        second = await client.get()
        assert (second["baseDeliverySequence"], second["maxDeliverySequence"]) == (1, 2)
        await client.put(ack(first["messageId"], 1))
        # The second one is never acknowledged: after the interval, from the confirmed 1.
        again = await client.get()
        assert (again["baseDeliverySequence"], again["maxDeliverySequence"]) == (1, 2)
        assert again["operations"] == second["operations"]
        await client.put(ack(again["messageId"], 2))
        assert await client.nothing_within(20)


async def test_legacy_relays_are_confirmed_by_message_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server(redelivery_interval=2) as env:
        await env.commit(make_op("writer", 1))
        client = env.connect()
        await client.put(handshake("legacy", last_delivery_sequence=None))
        response, delta = await client.get_until("operation-batch")
        assert "serverMaxDeliverySequence" not in response
        assert (delta["totalBatches"], len(delta["operations"])) == (1, 1)
        await env.commit(make_op("writer", 2))
        relay = await client.get()
        assert "maxDeliverySequence" not in relay
        assert [op["sequenceNumber"] for op in relay["operations"]] == [2]
        again = await client.get()  # not acknowledged: sent again
        assert again["operations"] == relay["operations"]
        await client.put(ack("someone-else", None))
        await client.put(ack(again["messageId"], None))
        assert await client.nothing_within(20)


async def test_refuse_connection_sends_one_error_and_closes() -> None:
    async with MemoryServerStore() as store:
        ctx = ServerContext(
            store=store,
            auth=None,
            schema=None,
            schema_range=(1, 1),
            batch_size=100,
            limits=ServerLimits(ping_interval=None),
            allowed_origins=None,
        )
        pipe = PipeTransport()
        await refuse_connection(
            ctx, pipe, code="MAX_CONNECTIONS", message="full", retriable=True, close_code=4029
        )
        error = await pipe.get()
        assert (error["type"], error["code"], error["retriable"]) == (
            "error",
            "MAX_CONNECTIONS",
            True,
        )
        assert await pipe.closed_with() == 4029


class RecordingTransport(PipeTransport):
    """A pipe that also notes, in a log shared by several pipes, each frame as it is sent."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self._name = name
        self._log = log

    async def send(self, frame: Frame) -> None:
        self._log.append((self._name, json.loads(frame)["type"]))
        await super().send(frame)


async def test_a_commit_is_relayed_before_the_writer_is_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, str]] = []
    async with server() as env:
        pipes = {}
        for name in ("reader-1", "reader-2", "writer"):
            pipe = pipes[name] = RecordingTransport(name, log)
            env.nursery.start_soon(SyncSession(env.ctx, pipe, session_id=name).run)
            await pipe.put(handshake(name))
            (_, final) = await pipe.get_until("operation-batch")
            await pipe.put(ack(final["messageId"], final["maxDeliverySequence"]))
        log.clear()
        written = make_op("writer", 1)
        await pipes["writer"].put(batch([operation_to_wire(written)]))
        assert (await pipes["writer"].get())["type"] == "acknowledgment"
        for name in ("reader-1", "reader-2"):
            relayed = await pipes[name].get()
            assert [op["id"] for op in relayed["operations"]] == [written.id]
        assert log[-1] == ("writer", "acknowledgment")
        assert sorted(log[:-1]) == [
            ("reader-1", "operation-batch"),
            ("reader-2", "operation-batch"),
        ]
        # Both readers' frames were built around the text the writer's session measured.
        assert env.ctx.encodings.misses == 0
        assert env.ctx.encodings.hits == 2


async def test_a_scoped_session_gets_only_what_its_scope_lets_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as env:
        scoped = env.connect()
        hello = json.loads(handshake("scoped"))
        hello["syncScope"] = {"notes": {}}
        await scoped.put(json_stringify(hello))
        response, final = await scoped.get_until("operation-batch")
        assert response["acceptedScope"] == {"notes": {}}
        await scoped.put(ack(final["messageId"], final["maxDeliverySequence"]))
        everyone = env.connect()
        await everyone.put(handshake("everyone"))
        (_, final) = await everyone.get_until("operation-batch")
        await everyone.put(ack(final["messageId"], final["maxDeliverySequence"]))
        writer = env.connect()
        await writer.put(handshake("writer"))
        await writer.get_until("operation-batch")
        todo = make_op("writer", 1)
        note = attrs.evolve(
            todo, collection="notes", record_id="note-1", sequence_number=2
        ).with_computed_id()
        await writer.put(batch([operation_to_wire(todo), operation_to_wire(note)]))
        await writer.get_until("acknowledgment")
        seen = await everyone.get()
        assert [op["id"] for op in seen["operations"]] == [todo.id, note.id]
        narrowed = await scoped.get()
        assert [op["id"] for op in narrowed["operations"]] == [note.id]
        assert (narrowed["baseDeliverySequence"], narrowed["maxDeliverySequence"]) == (0, 2)
