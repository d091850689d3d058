"""A scripted fake server over ``MemoryNetwork`` for the engine's tests (JSON, by hand).

Each test drives the server side message by message, so what the client must do at each
step is explicit.  ``serve_acking`` is a minimal, well-behaved server for tests that only
need one: it accepts every handshake, closes the post-handshake phase with an empty final
delivery batch, acknowledges every client batch and keeps what it received.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import attrs
import trio

from kora.core.operation import Operation, OpType
from kora.protocol.json_codec import JsonCodec
from kora.protocol.messages import (
    Acknowledgment,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    Message,
    OperationBatch,
    ScopeMap,
)
from kora.store import LocalMutation, Store
from kora.sync import MemoryNetwork, MemoryTransport, SyncEngine, TransportClosed
from kora.sync.transport import Frame

M = TypeVar("M")

_ids = itertools.count(1)


def server_message_id() -> str:
    return f"srv-{next(_ids)}"


class FakeServer:
    """The server end of one connection."""

    def __init__(self, transport: MemoryTransport, *, node_id: str = "fake-server") -> None:
        self.transport = transport
        self.node_id = node_id
        self.codec = JsonCodec()
        self.frames: list[Frame] = []
        self.messages: list[Message] = []

    async def receive(self) -> Message:
        frame = await self.transport.receive()
        self.frames.append(frame)
        message = self.codec.decode(frame)
        self.messages.append(message)
        return message

    async def expect(self, kind: type[M]) -> M:
        message = await self.receive()
        assert isinstance(message, kind), f"expected {kind.__name__}, got {message!r}"
        return message

    async def send(self, message: Message) -> None:
        await self.transport.send(self.codec.encode(message))

    async def accept(
        self,
        handshake: Handshake,
        *,
        version_vector: Mapping[str, int] | None = None,
        server_max: int = 0,
        accepted_scope: ScopeMap | None = None,
        server_time: int | None = None,
        delivery: Sequence[Operation] = (),
    ) -> OperationBatch:
        """Accept, then send the post-handshake delivery stream as one final batch."""
        await self.send(
            HandshakeResponse(
                message_id=server_message_id(),
                node_id=self.node_id,
                version_vector=dict(version_vector or {}),
                schema_version=handshake.schema_version,
                accepted=True,
                selected_wire_format="json",
                server_time=server_time,
                server_max_delivery_sequence=server_max,
                accepted_scope=accepted_scope,
            )
        )
        base = handshake.last_delivery_sequence or 0
        batch = OperationBatch(
            message_id=server_message_id(),
            operations=tuple(delivery),
            is_final=True,
            batch_index=0,
            base_delivery_sequence=base,
            max_delivery_sequence=max(server_max, base),
        )
        await self.send(batch)
        return batch

    async def ack(self, batch: OperationBatch) -> None:
        await self.send(
            Acknowledgment(
                message_id=server_message_id(),
                acknowledged_message_id=batch.message_id,
                last_sequence_number=batch.last_sequence_number,
            )
        )

    async def error(self, code: str, message: str, *, retriable: bool = False) -> None:
        await self.send(
            ErrorMessage(
                message_id=server_message_id(), code=code, message=message, retriable=retriable
            )
        )

    async def receive_batch(self) -> OperationBatch:
        """The next client batch (client acknowledgments in between are kept, skipped)."""
        while True:
            message = await self.receive()
            if isinstance(message, OperationBatch):
                return message


class AckingServer:
    """Accepts every connection of a network and acknowledges everything (see module doc)."""

    def __init__(self) -> None:
        self.operations: dict[str, Operation] = {}
        self.batches: list[OperationBatch] = []
        self.handshakes: list[Handshake] = []
        self.connections: list[FakeServer] = []

    async def serve(
        self,
        network: MemoryNetwork,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                transport = await network.accept()
                nursery.start_soon(self._connection, FakeServer(transport))

    async def _connection(self, server: FakeServer) -> None:
        self.connections.append(server)
        try:
            handshake = await server.expect(Handshake)
            self.handshakes.append(handshake)
            await server.accept(handshake)
            while True:
                batch = await server.receive_batch()
                self.batches.append(batch)
                for op in batch.operations:
                    self.operations[op.id] = op
                await server.ack(batch)
        except TransportClosed:
            pass


@attrs.define
class Harness:
    """A store, its engine, the network it dials and every event it emitted."""

    store: Store
    engine: SyncEngine
    network: MemoryNetwork
    events: list[tuple[str, dict[str, object]]]

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[dict[str, object]]:
        return [payload for event, payload in self.events if event == name]

    async def write(self, title: str) -> Operation:
        return await self.store.write_local(
            LocalMutation(type=OpType.INSERT, collection="todos", data={"title": title})
        )

    async def streaming(self) -> FakeServer:
        """Connect, answer the handshake and acknowledge the (empty) delta: the server side
        of a connection that has reached streaming."""
        await self.engine.connect()
        server = FakeServer(await self.network.accept())
        await server.accept(await server.expect(Handshake))
        await server.ack(await server.receive_batch())
        return server


HarnessFactory = Callable[..., AbstractAsyncContextManager[Harness]]
