"""A lightweight Kora protocol client: trio-websocket plus kora.protocol's codecs, no store.

Used where a full app per connection would measure the client rather than the server: the
200 fan-out receivers, the 1,000 idle connections, the byte counts and the remote pre-fill.
It speaks the protocol faithfully: a JSON handshake with ``lastDeliverySequence`` (the
delivery stream), optionally ``kora-pb1`` after the response, an empty final batch of its
own, and an acknowledgment of every delivery batch.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, Literal

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from kora.core.hlc import HLCTimestamp
from kora.core.ids import uuid7
from kora.core.operation import Operation, OpType
from kora.protocol import (
    Acknowledgment,
    ErrorMessage,
    FrameCodec,
    Handshake,
    HandshakeResponse,
    Message,
    OperationBatch,
    offered_wire_formats,
    wire_format_from_response,
)

WireFormatName = Literal["json", "kora-pb1"]
MAX_MESSAGE: Final = 64 * 1024 * 1024
COLLECTION: Final = "items"


def frame_size(payload: int, *, masked: bool) -> int:
    """Bytes of one unfragmented RFC 6455 frame carrying ``payload`` bytes."""
    header = 2 if payload < 126 else (4 if payload < 65536 else 10)
    return payload + header + (4 if masked else 0)


@attrs.define
class Counters:
    sent_frames: int = 0
    sent_bytes: int = 0
    received_frames: int = 0
    received_bytes: int = 0


class OperationFactory:
    """Valid operations of one node: content ids, increasing HLCs and sequence numbers."""

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id or uuid7()
        self._sequence = 0
        self._wall = 0
        self._logical = 0

    def _stamp(self) -> HLCTimestamp:
        now = int(time.time() * 1000)
        if now > self._wall:
            self._wall, self._logical = now, 0
        else:
            self._logical += 1
            if self._logical > 99_999:  # the protocol's cap; move the wall clock instead
                self._wall, self._logical = self._wall + 1, 0
        return HLCTimestamp(self._wall, self._logical, self.node_id)

    def _make(
        self,
        kind: OpType,
        record_id: str,
        data: dict[str, object],
        previous: dict[str, object] | None,
    ) -> Operation:
        self._sequence += 1
        return Operation(
            id="",
            node_id=self.node_id,
            type=kind,
            collection=COLLECTION,
            record_id=record_id,
            data=data,  # type: ignore[arg-type]
            previous_data=previous,  # type: ignore[arg-type]
            timestamp=self._stamp(),
            sequence_number=self._sequence,
        ).with_computed_id()

    def insert(self, record_id: str, data: dict[str, object]) -> Operation:
        return self._make(OpType.INSERT, record_id, data, None)

    def update(
        self, record_id: str, data: dict[str, object], previous: dict[str, object]
    ) -> Operation:
        return self._make(OpType.UPDATE, record_id, data, previous)


class ServerRefusedError(RuntimeError):
    """The server sent an ``error`` message (it closes the connection next)."""


DeliveryCallback = Callable[[float, OperationBatch], None]


class WireClient:
    """One open, handshaken connection.  Run :meth:`run` in a task to receive."""

    def __init__(self, ws: WebSocketConnection, node_id: str) -> None:
        self.ws = ws
        self.node_id = node_id
        self.codec = FrameCodec()
        self.counters = Counters()
        self.response: HandshakeResponse | None = None
        self.on_delivery: DeliveryCallback | None = None
        self._awaiting_acks: deque[trio.Event] = deque()
        self.watermark = 0

    async def send(self, message: Message) -> None:
        frame = self.codec.encode(message)
        size = len(frame.encode() if isinstance(frame, str) else frame)
        self.counters.sent_frames += 1
        self.counters.sent_bytes += frame_size(size, masked=True)
        await self.ws.send_message(frame)

    async def receive(self) -> tuple[float, Message]:
        frame = await self.ws.get_message()
        arrived = time.perf_counter()
        size = len(frame.encode() if isinstance(frame, str) else frame)
        self.counters.received_frames += 1
        self.counters.received_bytes += frame_size(size, masked=False)
        return arrived, self.codec.decode(frame)

    async def push(self, operations: tuple[Operation, ...] | list[Operation]) -> trio.Event:
        """Send one batch; the returned event is set when the server acknowledges it."""
        acked = trio.Event()
        self._awaiting_acks.append(acked)
        await self.send(
            OperationBatch(
                message_id=str(uuid.uuid4()),
                operations=tuple(operations),
                is_final=True,
                batch_index=0,
            )
        )
        return acked

    async def run(self) -> None:
        """Receive until the connection closes: acknowledge deliveries, match our acks."""
        while True:
            arrived, message = await self.receive()
            if isinstance(message, OperationBatch):
                if self.on_delivery is not None:
                    self.on_delivery(arrived, message)
                if message.max_delivery_sequence is not None:
                    self.watermark = message.max_delivery_sequence
                await self.send(
                    Acknowledgment(
                        message_id=str(uuid.uuid4()),
                        acknowledged_message_id=message.message_id,
                        last_sequence_number=message.last_sequence_number,
                        delivery_sequence=message.max_delivery_sequence,
                    )
                )
            elif isinstance(message, Acknowledgment) and self._awaiting_acks:
                self._awaiting_acks.popleft().set()
            elif isinstance(message, ErrorMessage):
                raise ServerRefusedError(f"{message.code}: {message.message}")


@asynccontextmanager
async def open_wire_client(
    url: str,
    *,
    wire_format: WireFormatName = "json",
    on_delivery: DeliveryCallback | None = None,
) -> AsyncIterator[WireClient]:
    """A handshaken client whose receive loop runs for the duration of the block."""
    async with open_websocket_url(url, max_message_size=MAX_MESSAGE) as ws:
        client = WireClient(ws, uuid7())
        client.on_delivery = on_delivery
        async with trio.open_nursery() as nursery:
            # The handshake response is read before the loop starts; the loop reads the rest.
            await _handshake_then_run(client, wire_format, nursery)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()


async def _handshake_then_run(
    client: WireClient, wire_format: WireFormatName, nursery: trio.Nursery
) -> None:
    offered = offered_wire_formats(binary=wire_format == "kora-pb1")
    await client.send(
        Handshake(
            message_id=str(uuid.uuid4()),
            node_id=client.node_id,
            version_vector={},
            schema_version=1,
            supported_wire_formats=offered,
            last_delivery_sequence=0,
        )
    )
    _, response = await client.receive()
    if not isinstance(response, HandshakeResponse) or not response.accepted:
        raise RuntimeError(f"handshake refused: {response!r}")
    client.response = response
    client.codec.switch_to(wire_format_from_response(response.selected_wire_format, offered))
    if client.codec.wire_format.value != wire_format:
        raise RuntimeError(f"the server did not select {wire_format}")
    nursery.start_soon(client.run)
    acked = await client.push(())  # our side of the exchange: nothing, one empty final batch
    await acked.wait()
