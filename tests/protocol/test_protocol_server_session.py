"""ServerSession: handshake decisions, delivery chaining, one acknowledgment per batch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_helpers import frames, ids, make_op, others, sent

from kora.core.canonical import json_stringify
from kora.core.operations import operation_to_wire
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
from kora.protocol.server import MAX_TRACKED_LEGACY_BATCHES

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
    # A watermark beyond the log: the true maximum is below it, which tells the client.
    session = ServerSession()
    session.receive(handshake(last_delivery_sequence=7))
    (response,) = sent(accept(session, delivery_start=0, server_max_delivery_sequence=3))
    assert response.server_max_delivery_sequence == 3


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


# ---------------------------------------------------------------- what a server needs


def lenient_session() -> ServerSession:
    session = ServerSession(new_message_id=ids("s"), lenient_operations=True)
    session.receive(handshake())
    accept(session)
    return session


def batch_with(wires: list[Any], name: str = "b") -> str:
    return json_stringify(
        {
            "type": "operation-batch",
            "messageId": name,
            "operations": wires,
            "isFinal": True,
            "batchIndex": 0,
        }
    )


def malformed_wire(seq: int | None) -> dict[str, Any]:
    wire = operation_to_wire(make_op(seq or 99))
    del wire["causalDeps"]
    if seq is None:
        wire["sequenceNumber"] = "7"
    return wire


def test_lenient_batches_are_received_with_their_malformed_operations() -> None:
    session = lenient_session()
    frame = batch_with([malformed_wire(1), operation_to_wire(make_op(2)), malformed_wire(3)])
    (received,) = session.receive_frame(frame)
    assert isinstance(received, OperationsReceived)
    assert [m.index for m in received.malformed] == [0, 2]
    assert list(received.numbered_operations()) == [(1, make_op(2))]
    (rejected,) = sent(session.send_operation_rejected(received.malformed[0], "BAD", "m"))
    assert (rejected.operation_id, rejected.collection, rejected.record_id) == (
        make_op(1).id,
        "todos",
        "rec-1",
    )
    (ack,) = sent(session.batch_processed("b"))
    assert ack.last_sequence_number == 3  # the last operation as sent, malformed or not


@pytest.mark.parametrize(
    ("wires", "last"),
    [
        ([malformed_wire(5), operation_to_wire(make_op(2))], 2),
        ([operation_to_wire(make_op(2)), malformed_wire(None)], 0),  # no usable seq
    ],
)
def test_the_acknowledgment_of_a_lenient_batch(wires: list[Any], last: int) -> None:
    session = lenient_session()
    session.receive_frame(batch_with(wires))
    (ack,) = sent(session.batch_processed("b"))
    assert ack.last_sequence_number == last


def test_strict_sessions_and_unaccepted_ones_refuse_malformed_batches_whole() -> None:
    frame = batch_with([malformed_wire(1), operation_to_wire(make_op(2))])
    strict = accepted(0)
    with pytest.raises(RemoteProtocolError) as caught:
        strict.receive_frame(frame)
    assert (caught.value.code, caught.value.fatal) == ("INVALID_OPERATION", True)
    waiting = ServerSession(lenient_operations=True)
    with pytest.raises(RemoteProtocolError) as caught:
        waiting.receive_frame(frame)
    assert caught.value.fatal
    assert waiting.closed


def test_abort_tells_the_client_once_even_after_a_fatal_error() -> None:
    session = accepted(0)
    (error,) = sent(session.abort("RATE_LIMIT", "slow down", retriable=True))
    assert (error.code, error.message, error.retriable) == ("RATE_LIMIT", "slow down", True)
    assert session.closed
    assert not session.can_abort
    with pytest.raises(LocalProtocolError):
        session.abort("X", "again")

    session = accepted(0)
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive_frame('{"type":"operation-batch","messageId":"m","messageId":"x"}')
    assert session.closed
    assert session.fatal_error is caught.value
    assert session.can_abort
    (error,) = sent(session.abort(caught.value.code, str(caught.value)))
    assert (error.code, error.retriable) == ("DUPLICATE_KEY", False)
    assert not session.can_abort

    session = accepted(0)
    session.close()  # the connection went away: nobody to tell
    assert not session.can_abort
    with pytest.raises(LocalProtocolError):
        session.abort("X", "m")


def test_a_handshake_refusal_can_be_retriable() -> None:
    session = ServerSession()
    session.receive(handshake())
    (error,) = sent(session.refuse_handshake("SYNC_ERROR", "auth is down", retriable=True))
    assert (error.code, error.retriable) == ("SYNC_ERROR", True)
    assert session.closed


def test_a_client_error_before_the_handshake_is_ignored() -> None:
    session = ServerSession()
    error = ErrorMessage(message_id="e", code="X", message="m", retriable=False)
    assert session.receive(error) == [ErrorReceived(error)]
    assert session.state is ServerState.AWAITING_HANDSHAKE


def test_stalled_delivery_is_sent_again_from_the_confirmed_position() -> None:
    session = accepted(3)
    session.send_delivery([make_op(4)], base=3, top=5, is_final=False)
    actions = session.send_delivery([make_op(6)], base=5, top=9)
    (batch,) = sent(actions)
    assert (batch.base_delivery_sequence, batch.max_delivery_sequence, batch.is_final) == (
        5,
        9,
        True,
    )
    assert others(actions) == [ReachedStreaming()]
    assert (session.sent_through, session.awaiting_acknowledgment) == (9, True)
    session.receive(client_ack("x", 5))
    session.rewind()
    assert (session.delivered_through, session.sent_through) == (5, 5)
    with pytest.raises(LocalProtocolError):
        session.send_delivery([make_op(6)], base=9, top=12)  # 9 was forgotten by the rewind
    (again,) = sent(session.send_delivery([make_op(6)], base=5, top=9))
    assert (again.base_delivery_sequence, again.max_delivery_sequence) == (5, 9)
    session.receive(client_ack("y", 9))
    assert not session.awaiting_acknowledgment


def test_legacy_delivery_is_confirmed_by_message_id() -> None:
    session = accepted(None)
    with pytest.raises(LocalProtocolError):
        accepted(0).relay_from(4)  # a watermark client starts at the handshake
    session.relay_from(10)
    (batch,) = sent(session.send_delivery([make_op(11)], base=10, top=12, is_final=False))
    assert (batch.is_final, batch.batch_index, batch.max_delivery_sequence) == (True, 0, None)
    assert (session.delivered_through, session.sent_through) == (10, 12)
    session.receive(client_ack("unknown", None))
    assert session.delivered_through == 10
    session.receive(client_ack(batch.message_id, None))
    assert session.delivered_through == 12
    # Nothing visible up to 20: nothing to send, nothing to wait for.
    assert session.send_delivery([], base=12, top=20) == []
    assert (session.delivered_through, session.sent_through) == (20, 20)
    with pytest.raises(LocalProtocolError):
        session.send_delivery([make_op(21)], base=19, top=21)


def test_legacy_batches_in_flight_are_bounded() -> None:
    session = accepted(None)
    first = sent(session.send_delivery([make_op(1)], base=0, top=1))[0]
    last = first
    for position in range(1, MAX_TRACKED_LEGACY_BATCHES + 1):
        last = sent(session.send_delivery([make_op(1)], base=position, top=position + 1))[0]
    session.receive(client_ack(first.message_id, None))  # forgotten: confirms nothing
    assert session.delivered_through == 0
    session.receive(client_ack(last.message_id, None))
    assert session.delivered_through == MAX_TRACKED_LEGACY_BATCHES + 1


@given(st.lists(st.tuples(st.sampled_from(["send", "ack", "rewind"]), st.integers(0, 4))))
def test_delivery_positions_stay_ordered(steps: list[tuple[str, int]]) -> None:
    for watermark in (0, None):
        session = accepted(watermark)
        confirmed, confirmed_by = 0, ""
        for kind, amount in steps:
            if kind == "send":
                batch = sent(
                    session.send_delivery(
                        [make_op(1)], base=session.sent_through, top=session.sent_through + amount
                    )
                )[0]
                if watermark is None:
                    confirmed_by = batch.message_id
            elif kind == "ack" and session.sent_through:
                if watermark is None:
                    session.receive(client_ack(confirmed_by, None))
                else:
                    session.receive(client_ack("x", session.sent_through - amount))
            elif kind == "rewind":
                session.rewind()
            assert confirmed <= session.delivered_through <= session.sent_through
            confirmed = session.delivered_through
