"""A ClientSession and a ServerSession talking through frames, negotiated to kora-pb1."""

from __future__ import annotations

from collections import deque
from typing import Any

from protocol_helpers import ids, make_op

from kora.protocol import (
    ApplyBatch,
    BatchAcknowledged,
    ClientSession,
    ClientState,
    HandshakeAccepted,
    HandshakeReceived,
    OperationsReceived,
    ReachedStreaming,
    SendFrame,
    ServerSession,
    ServerState,
    WatermarkChanged,
    WireFormat,
)


class Wire:
    """Frames in flight in each direction, plus what each side was told."""

    def __init__(self) -> None:
        self.to_server: deque[Any] = deque()
        self.to_client: deque[Any] = deque()
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []

    def client_did(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, SendFrame):
                self.to_server.append(action.frame)
            else:
                self.client_events.append(action)

    def server_did(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, SendFrame):
                self.to_client.append(action.frame)
            else:
                self.server_events.append(action)


def test_a_full_sync_in_kora_pb1() -> None:
    wire = Wire()
    client = ClientSession(node_id="c", window=2, new_message_id=ids("c"))
    server = ServerSession(new_message_id=ids("s"))
    stored = [make_op(seq, node="other") for seq in (1, 2, 3)]

    wire.client_did(client.handshake(version_vector={"c": 2}, last_delivery_sequence=0))
    assert isinstance(wire.to_server[0], str)
    (received,) = server.receive_frame(wire.to_server.popleft())
    assert isinstance(received, HandshakeReceived)
    wire.server_did(
        server.accept_handshake(
            node_id="server",
            version_vector={"other": 3},
            schema_version=1,
            server_time=1_700_000_000_000,
            delivery_start=0,
            server_max_delivery_sequence=3,
        )
    )
    # The server's post-handshake stream: two chained delivery batches, the last final.
    wire.server_did(
        server.send_batch(
            stored[:2], is_final=False, base_delivery_sequence=0, max_delivery_sequence=2
        )
    )
    wire.server_did(
        server.send_batch(stored[2:], base_delivery_sequence=2, max_delivery_sequence=3)
    )
    assert server.state is ServerState.STREAMING
    response, *batches = wire.to_client
    assert isinstance(response, str)
    assert all(isinstance(frame, bytes) for frame in batches)

    applied = []
    while wire.to_client:
        for action in client.receive_frame(wire.to_client.popleft()):
            if isinstance(action, ApplyBatch):
                applied.extend(action.batch.operations)
                wire.client_did(client.batch_applied(action.batch.message_id))
            else:
                wire.client_did([action])
    assert applied == stored
    assert client.wire_format is WireFormat.KORA_PB1
    assert client.watermark == 3
    assert [e for e in wire.client_events if isinstance(e, WatermarkChanged)] == [
        WatermarkChanged(2),
        WatermarkChanged(3),
    ]
    assert isinstance(wire.client_events[0], HandshakeAccepted)

    # Our delta: two batches pipelined (window 2), acknowledged in order.
    mine = [make_op(1, node="c"), make_op(2, node="c")]
    wire.client_did(client.send_batch(mine[:1], is_final=False, total_batches=2))
    wire.client_did(client.send_batch(mine[1:], batch_index=1, total_batches=2))
    received_ops = []
    while wire.to_server:
        for action in server.receive_frame(wire.to_server.popleft()):
            if isinstance(action, OperationsReceived):
                received_ops.extend(action.batch.operations)
                wire.server_did(server.batch_processed(action.batch.message_id))
    assert received_ops == mine
    assert server.delivered_through == 3  # from the client's acks

    while wire.to_client:
        wire.client_did(client.receive_frame(wire.to_client.popleft()))
    acknowledged = [e for e in wire.client_events if isinstance(e, BatchAcknowledged)]
    assert [op for e in acknowledged for op in e.batch.operations] == mine
    assert ReachedStreaming() in wire.client_events
    assert client.state is ClientState.STREAMING
    assert client.in_flight == ()
