"""ServerSession: handshake decisions, delivery chaining, one acknowledgment per batch."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_helpers import frames, ids, make_op, others, sent

from kora.protocol import (
    Acknowledgment,
    AcknowledgmentReceived,
    AwarenessUpdate,
    ErrorMessage,
    ErrorReceived,
    Handshake,
    HandshakeReceived,
    HandshakeResponse,
    JsonCodec,
    LocalProtocolError,
    OperationBatch,
    OperationRejected,
    OperationsReceived,
    ReachedStreaming,
    RemoteProtocolError,
    ServerSession,
    ServerState,
    SideChannelReceived,
    WireFormat,
)

JSON = JsonCodec()


def handshake(**changes: Any) -> Handshake:
    fields: dict[str, Any] = {
        "message_id": "h",
        "node_id": "client",
        "version_vector": {},
        "schema_version": 1,
        "supported_wire_formats": ("json", "protobuf"),
        "last_delivery_sequence": 0,
    }
    fields.update(changes)
    return Handshake(**fields)


def accept(session: ServerSession, **changes: Any) -> list[Any]:
    fields: dict[str, Any] = {
        "node_id": "server",
        "version_vector": {"a": 1},
        "schema_version": 1,
        "server_time": 1_700_000_000_000,
        "delivery_start": 0,
        "server_max_delivery_sequence": 10,
    }
    fields.update(changes)
    return session.accept_handshake(**fields)


def accepted(watermark: int | None = 0, **changes: Any) -> ServerSession:
    session = ServerSession(new_message_id=ids("s"))
    session.receive(handshake(last_delivery_sequence=watermark))
    if watermark is None:
        changes.setdefault("delivery_start", None)
        changes.setdefault("server_max_delivery_sequence", None)
    else:
        changes.setdefault("delivery_start", watermark)
    accept(session, **changes)
    return session


def client_batch(name: str, *seqs: int) -> OperationBatch:
    return OperationBatch(
        message_id=name, operations=tuple(make_op(s) for s in seqs), is_final=True, batch_index=0
    )


def client_ack(name: str, delivery: int | None) -> Acknowledgment:
    return Acknowledgment(
        message_id=f"a-{name}",
        acknowledged_message_id=name,
        last_sequence_number=0,
        delivery_sequence=delivery,
    )


@pytest.mark.parametrize(
    "first",
    [
        client_batch("b", 1),
        client_ack("x", 1),
        AwarenessUpdate(message_id="a", client_id=1, states={}),
        HandshakeResponse(
            message_id="r", node_id="n", version_vector={}, schema_version=1, accepted=True
        ),
    ],
)
def test_nothing_but_a_handshake_before_the_handshake(first: Any) -> None:
    session = ServerSession()
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive(first)
    assert (caught.value.code, caught.value.fatal) == ("HANDSHAKE_REQUIRED", True)
    assert session.state is ServerState.CLOSED


def test_the_handshake_goes_to_the_caller_and_a_second_one_is_refused() -> None:
    session = ServerSession()
    message = handshake()
    assert session.receive_frame(JSON.encode(message)) == [HandshakeReceived(message)]
    assert session.state is ServerState.VALIDATING
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive(handshake())
    assert (caught.value.code, caught.value.fatal) == ("DUPLICATE_HANDSHAKE", False)
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive(client_batch("b", 1))  # still validating
    assert caught.value.code == "HANDSHAKE_REQUIRED"


@pytest.mark.parametrize(
    ("offered", "binary", "selected"),
    [
        (("kora-pb1", "json"), True, "kora-pb1"),
        (("json", "protobuf"), True, "json"),  # a Kora.js client: never "protobuf"
        (("kora-pb1", "json"), False, "json"),
        (None, True, "json"),
    ],
)
def test_format_selection_and_switch_after_the_response(
    offered: tuple[str, ...] | None, binary: bool, selected: str
) -> None:
    session = ServerSession(binary=binary)
    session.receive(handshake(supported_wire_formats=offered))
    (response_frame,) = frames(accept(session))
    assert isinstance(response_frame, str)  # the response itself is always JSON
    response = JSON.decode(response_frame)
    assert isinstance(response, HandshakeResponse)
    assert response.selected_wire_format == selected
    assert session.wire_format is WireFormat(selected)
    (batch_frame,) = frames(
        session.send_batch([], base_delivery_sequence=0, max_delivery_sequence=0)
    )
    assert isinstance(batch_frame, bytes if selected == "kora-pb1" else str)


def test_a_reset_watermark_is_told_to_the_client() -> None:
    session = ServerSession()
    session.receive(handshake(last_delivery_sequence=7))
    (response,) = sent(accept(session, delivery_start=0, server_max_delivery_sequence=50))
    assert response.server_max_delivery_sequence == 0  # below 7: the client drops its watermark
    session = ServerSession()
    session.receive(handshake(last_delivery_sequence=7))
    (response,) = sent(accept(session, delivery_start=7, server_max_delivery_sequence=50))
    assert response.server_max_delivery_sequence == 50


@pytest.mark.parametrize(
    ("watermark", "changes"),
    [
        (None, {"delivery_start": 0, "server_max_delivery_sequence": None}),
        (None, {"delivery_start": None, "server_max_delivery_sequence": 3}),
        (5, {"delivery_start": None}),
        (5, {"delivery_start": 3}),
        (5, {"delivery_start": 6}),
        (5, {"server_max_delivery_sequence": None}),
    ],
)
def test_delivery_arguments_must_fit_the_handshake(watermark: int | None, changes: Any) -> None:
    session = ServerSession()
    session.receive(handshake(last_delivery_sequence=watermark))
    with pytest.raises(LocalProtocolError):
        accept(session, **changes)


def test_refusals_close_the_session() -> None:
    session = ServerSession()
    session.receive(handshake(schema_version=3))
    (response,) = sent(
        session.reject_schema(
            node_id="s", schema_version=1, supported_min=1, supported_max=2, server_time=5
        )
    )
    assert not response.accepted
    assert (
        response.reject_reason
        == "SCHEMA_MISMATCH: client schema version 3 not in supported range [1, 2]"
    )
    assert (response.supported_schema_min, response.supported_schema_max) == (1, 2)
    assert response.selected_wire_format is None
    assert session.state is ServerState.CLOSED

    session = ServerSession()
    session.receive(handshake(auth_token="bad"))
    (error,) = sent(session.refuse_handshake())
    assert (error.code, error.message, error.retriable) == (
        "AUTH_FAILED",
        "Authentication failed",
        False,
    )
    assert session.closed
    with pytest.raises(LocalProtocolError):
        session.receive(handshake())


def test_delivery_batches_must_chain() -> None:
    session = accepted(3)
    assert session.delivered_through == 3
    with pytest.raises(LocalProtocolError):
        session.send_batch([make_op(1)], base_delivery_sequence=4, max_delivery_sequence=5)
    with pytest.raises(LocalProtocolError):
        session.send_batch([make_op(1)])  # a watermark client needs delivery sequences
    session.send_batch(
        [make_op(4)], is_final=False, base_delivery_sequence=3, max_delivery_sequence=5
    )
    actions = session.send_batch([make_op(5)], base_delivery_sequence=5, max_delivery_sequence=9)
    assert others(actions) == [ReachedStreaming()]
    # A re-push from the confirmed position is fine, a base in between is not.
    session.send_batch([make_op(4)], base_delivery_sequence=3, max_delivery_sequence=9)
    with pytest.raises(LocalProtocolError):
        session.send_batch([], base_delivery_sequence=4, max_delivery_sequence=9)
    with pytest.raises(LocalProtocolError):
        session.send_batch([], base_delivery_sequence=9, max_delivery_sequence=8)
    # The client confirms 9 (and cannot confirm what was never sent).
    (received,) = session.receive(client_ack("x", 12))
    assert received == AcknowledgmentReceived(client_ack("x", 12), 9)
    assert session.delivered_through == 9
    session.receive(client_ack("y", 2))
    assert session.delivered_through == 9


def test_legacy_clients_get_plain_batches() -> None:
    session = accepted(None)
    assert not session.uses_delivery_stream
    with pytest.raises(LocalProtocolError):
        session.send_batch([], base_delivery_sequence=0, max_delivery_sequence=0)
    (batch,) = sent(session.send_batch([make_op(1)], total_batches=1, cursor="c"))
    assert batch.max_delivery_sequence is None
    assert session.state is ServerState.STREAMING


def test_one_acknowledgment_per_client_batch_in_arrival_order() -> None:
    session = accepted(0)
    first, second, empty = client_batch("b1", 4, 2, 9), client_batch("b2", 3), client_batch("b3")
    assert session.receive(first) == [OperationsReceived(first)]
    session.receive(second)
    session.receive(empty)
    assert session.pending_batches == (first, second, empty)
    with pytest.raises(LocalProtocolError):
        session.batch_processed("b2")
    rejection = sent(session.send_operation_rejected(make_op(2), "FORBIDDEN", "no"))
    assert rejection == [
        OperationRejected(
            message_id=rejection[0].message_id,
            operation_id=make_op(2).id,
            collection="todos",
            record_id="rec-2",
            code="FORBIDDEN",
            message="no",
            retriable=False,
        )
    ]
    acks = [sent(session.batch_processed(name))[0] for name in ("b1", "b2", "b3")]
    assert [
        (a.acknowledged_message_id, a.last_sequence_number, a.delivery_sequence) for a in acks
    ] == [
        ("b1", 9, None),  # the last op's seq, not the highest
        ("b2", 3, None),
        ("b3", 0, None),
    ]
    with pytest.raises(LocalProtocolError):
        session.batch_processed("b3")


def test_other_client_messages() -> None:
    session = accepted(0)
    error = ErrorMessage(message_id="e", code="X", message="m", retriable=True)
    assert session.receive(error) == [ErrorReceived(error)]
    awareness = AwarenessUpdate(message_id="a", client_id=1, states={})
    assert session.receive(awareness) == [SideChannelReceived(awareness)]
    assert sent(session.send_side_channel(awareness)) == [awareness]
    rejected = OperationRejected(
        message_id="x",
        operation_id="o",
        collection="c",
        record_id="r",
        code="C",
        message="m",
        retriable=False,
    )
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive(rejected)
    assert (caught.value.code, caught.value.fatal) == ("UNEXPECTED_MESSAGE", False)
    assert not session.closed
