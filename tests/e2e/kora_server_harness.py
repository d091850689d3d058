"""Helpers of the sync-server end-to-end tests: captured frames, operations, JSON clients.

Rules of these tests (as trio-websocket's): servers bind 127.0.0.1 on port 0, every network
wait runs under ``trio.fail_after`` so no test can hang, and one side always initiates the
close.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from kora.core.canonical import json_stringify
from kora.core.hlc import HLCTimestamp
from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.core.operations import create_operation, operation_to_wire

#: Seconds any single network wait of a test may take.
WAIT = 5.0


def captured(
    vectors_dir: Path, scenario: str, connection: str, direction: str | None = None
) -> list[dict[str, Any]]:
    """Lines of captured_conversations.jsonl for one connection, in order."""
    lines = []
    with (vectors_dir / "captured_conversations.jsonl").open(encoding="utf-8") as fh:
        for raw in fh:
            line = json.loads(raw)
            if line["scenario"] != scenario or line["connection"] != connection:
                continue
            if direction is not None and line["direction"] != direction:
                continue
            lines.append(line)
    return lines


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_op(
    node: str,
    seq: int,
    *,
    collection: str = "todos",
    record_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    wall_time: int | None = None,
    op_type: str = "insert",
    previous_data: Mapping[str, Any] | None = None,
) -> Operation:
    """A valid operation (its id is its content hash)."""
    return create_operation(
        type=op_type,
        node_id=node,
        collection=collection,
        record_id=record_id or uuid7(),
        data=data if data is not None or op_type == "delete" else {"title": f"op-{seq}"},
        previous_data=previous_data,
        timestamp=HLCTimestamp(wall_time if wall_time is not None else now_ms(), 0, node),
        sequence_number=seq,
    )


def handshake(
    node: str,
    *,
    last_delivery_sequence: int | None = 0,
    token: str | None = None,
    scope: Mapping[str, Any] | None = None,
    schema_version: int = 1,
    version_vector: Mapping[str, int] | None = None,
) -> str:
    frame: dict[str, Any] = {
        "type": "handshake",
        "messageId": f"msg-{uuid7()}",
        "nodeId": node,
        "versionVector": dict(version_vector or {}),
        "schemaVersion": schema_version,
    }
    if token is not None:
        frame["authToken"] = token
    frame["supportedWireFormats"] = ["json", "protobuf"]
    if scope is not None:
        frame["syncScope"] = dict(scope)
    if last_delivery_sequence is not None:
        frame["lastDeliverySequence"] = last_delivery_sequence
    return json_stringify(frame)


def batch_frame(ops: list[Operation] | list[dict[str, Any]], message_id: str | None = None) -> str:
    wires = [operation_to_wire(op) if isinstance(op, Operation) else op for op in ops]
    return json_stringify(
        {
            "type": "operation-batch",
            "messageId": message_id or f"msg-{uuid7()}",
            "operations": wires,
            "isFinal": True,
            "batchIndex": 0,
        }
    )


def ack_frame(acknowledged: str, delivery_sequence: int | None) -> str:
    frame: dict[str, Any] = {
        "type": "acknowledgment",
        "messageId": f"msg-{uuid7()}",
        "acknowledgedMessageId": acknowledged,
        "lastSequenceNumber": 0,
    }
    if delivery_sequence is not None:
        frame["deliverySequence"] = delivery_sequence
    return json_stringify(frame)


class JsonClient:
    """A raw JSON WebSocket client: send frames, receive decoded dicts."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, frame: str | bytes) -> None:
        with trio.fail_after(WAIT):
            await self.ws.send_message(frame)

    async def receive(self, within: float = WAIT) -> dict[str, Any]:
        with trio.fail_after(within):
            message = await self.ws.get_message()
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    async def receive_until(self, type_: str, within: float = WAIT) -> list[dict[str, Any]]:
        """Every message up to and including the first of ``type_``."""
        received = []
        while True:
            message = await self.receive(within)
            received.append(message)
            if message["type"] == type_:
                return received

    async def nothing_within(self, seconds: float) -> bool:
        """True if no message arrives within ``seconds`` (used only to check silence)."""
        with trio.move_on_after(seconds):
            await self.ws.get_message()
            return False
        return True

    async def connect(self, node: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Handshake and read the initial stream up to its final batch."""
        await self.send(handshake(node, **kwargs))
        response = await self.receive()
        assert response["type"] == "handshake-response", response
        if not response["accepted"]:
            return [response]
        messages = [response]
        while True:
            message = await self.receive()
            messages.append(message)
            if message["type"] == "operation-batch" and message["isFinal"]:
                return messages


@asynccontextmanager
async def json_client(url: str, **kwargs: object) -> AsyncIterator[JsonClient]:
    """A connected client; trio-websocket bounds the connect and the close by ``WAIT``."""
    async with open_websocket_url(
        url,
        connect_timeout=WAIT,
        disconnect_timeout=WAIT,
        **kwargs,  # type: ignore[arg-type]
    ) as ws:
        yield JsonClient(ws)
