"""ClientSession: handshake, delivery watermark (spec 4.4), acknowledgments (spec 4.7)."""

from __future__ import annotations

from typing import Any

import pytest
from protocol_helpers import frames, ids, make_op, others, sent

from kora.protocol import (
    Acknowledgment,
    ApplyBatch,
    AwarenessUpdate,
    BatchAcknowledged,
    BatchIgnored,
    ClientSession,
    ClientState,
    ErrorMessage,
    ErrorReceived,
    Handshake,
    HandshakeAccepted,
    HandshakeRejected,
    HandshakeResponse,
    JsonCodec,
    LocalProtocolError,
    OperationBatch,
    OperationRejected,
    OperationRejectedReceived,
    ReachedStreaming,
    RemoteProtocolError,
    SideChannelReceived,
    WatermarkChanged,
    WireFormat,
)

JSON = JsonCodec()


def response(**changes: Any) -> HandshakeResponse:
    fields: dict[str, Any] = {
        "message_id": "r",
        "node_id": "server",
        "version_vector": {},
        "schema_version": 1,
        "accepted": True,
        "selected_wire_format": "json",
        "server_time": 1_700_000_000_000,
        "server_max_delivery_sequence": 100,
    }
    fields.update(changes)
    return HandshakeResponse(**fields)


def delivery(
    base: int | None, top: int, *seqs: int, final: bool = True, name: str = "b"
) -> OperationBatch:
    return OperationBatch(
        message_id=name,
        operations=tuple(make_op(seq) for seq in seqs),
        is_final=final,
        batch_index=0,
        base_delivery_sequence=base,
        max_delivery_sequence=top,
    )


def legacy(*seqs: int, final: bool = True, name: str = "l") -> OperationBatch:
    return OperationBatch(
        message_id=name,
        operations=tuple(make_op(seq) for seq in seqs),
        is_final=final,
        batch_index=0,
    )


def ack_for(batch_id: str, name: str = "a") -> Acknowledgment:
    return Acknowledgment(message_id=name, acknowledged_message_id=batch_id, last_sequence_number=0)


def connected(
    watermark: int = 0, *, window: int = 1, scope: Any = None, **accept: Any
) -> ClientSession:
    session = ClientSession(node_id="client", window=window, new_message_id=ids("c"))
    session.handshake(version_vector={}, last_delivery_sequence=watermark, sync_scope=scope)
    session.receive(response(**accept))
    return session


def test_handshake_is_json_and_offers_our_binary_format_first() -> None:
    session = ClientSession(node_id="n1", new_message_id=ids("c"))
    (frame,) = frames(session.handshake(version_vector={"n1": 4}, auth_token="tok"))
    assert isinstance(frame, str)
    message = JSON.decode(frame)
    assert isinstance(message, Handshake)
    assert message.supported_wire_formats == ("kora-pb1", "json")
    assert "protobuf" not in frame
    assert message.last_delivery_sequence == 0
    assert message.version_vector == {"n1": 4}
    assert session.state is ClientState.HANDSHAKING
    with pytest.raises(LocalProtocolError):
        session.handshake(version_vector={})


def test_receiving_before_the_handshake_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        ClientSession(node_id="n").receive(ack_for("x"))


@pytest.mark.parametrize(
    ("binary", "selected", "expected"),
    [
        (True, "kora-pb1", WireFormat.KORA_PB1),
        (True, "json", WireFormat.JSON),
        (True, "protobuf", WireFormat.JSON),  # what every Kora.js server answers
        (True, None, WireFormat.JSON),
        (False, "kora-pb1", WireFormat.JSON),  # we did not offer it
    ],
)
def test_the_format_switches_only_to_our_token_and_only_if_offered(
    binary: bool, selected: str | None, expected: WireFormat
) -> None:
    session = ClientSession(node_id="n", binary=binary, new_message_id=ids("c"))
    session.handshake(version_vector={})
    (accepted,) = session.receive_frame(JSON.encode(response(selected_wire_format=selected)))
    assert isinstance(accepted, HandshakeAccepted)
    assert accepted.wire_format is expected is session.wire_format
    (frame,) = frames(session.send_batch([make_op(1)]))
    assert isinstance(frame, bytes if expected is WireFormat.KORA_PB1 else str)


def test_rejection_and_handshake_errors_close_the_session() -> None:
    session = ClientSession(node_id="n")
    session.handshake(version_vector={})
    (rejected,) = session.receive(response(accepted=False, reject_reason="SCHEMA_MISMATCH: x"))
    assert isinstance(rejected, HandshakeRejected)
    assert session.state is ClientState.CLOSED
    with pytest.raises(LocalProtocolError):
        session.receive(ack_for("x"))

    session = ClientSession(node_id="n")
    session.handshake(version_vector={})
    error = ErrorMessage(message_id="e", code="AUTH_FAILED", message="no", retriable=False)
    assert session.receive(error) == [ErrorReceived(error)]
    assert session.closed


@pytest.mark.parametrize(
    ("watermark", "sent_scope", "accept", "expected"),
    [
        (5, None, {"server_max_delivery_sequence": 5}, 5),
        (5, None, {"server_max_delivery_sequence": 4}, 0),  # the server's log rolled back
        (5, None, {"server_max_delivery_sequence": None}, 5),
        (5, {"todos": {"u": "a", "v": 1}}, {"accepted_scope": {"todos": {"v": 1, "u": "a"}}}, 5),
        (5, {"todos": {"u": "a"}}, {"accepted_scope": {"todos": {"u": "b"}}}, 0),
        (5, None, {"accepted_scope": {"todos": {"u": "a"}}}, 0),  # the server scoped us
        (5, {"todos": {}}, {}, 0),
        (0, {"todos": {}}, {}, 0),
    ],
)
def test_watermark_reset_rules(watermark: int, sent_scope: Any, accept: Any, expected: int) -> None:
    session = ClientSession(node_id="n")
    session.handshake(version_vector={}, last_delivery_sequence=watermark, sync_scope=sent_scope)
    actions = session.receive(response(**accept))
    assert isinstance(actions[-1], HandshakeAccepted)
    assert actions[-1].watermark == expected == session.watermark
    changed = [a for a in actions if isinstance(a, WatermarkChanged)]
    assert changed == ([WatermarkChanged(expected)] if expected != watermark else [])


def test_a_chained_delivery_batch_is_acknowledged_only_after_it_was_applied() -> None:
    session = connected(3)
    batch = delivery(3, 9, 4, 5, final=False)
    assert session.receive(batch) == [ApplyBatch(batch)]
    assert session.watermark == 3
    actions = session.batch_applied("b")
    (ack,) = sent(actions)
    assert ack == Acknowledgment(
        message_id=ack.message_id,
        acknowledged_message_id="b",
        last_sequence_number=5,
        delivery_sequence=9,
    )
    assert others(actions) == [WatermarkChanged(9)]
    assert session.watermark == 9


def test_a_gap_is_ignored_entirely() -> None:
    session = connected(3)
    batch = delivery(4, 9, 5)
    assert session.receive(batch) == [BatchIgnored(batch, "gap: base 4 > watermark 3")]
    assert session.watermark == 3


def test_a_duplicate_is_re_acknowledged_with_the_current_watermark_and_not_applied() -> None:
    session = connected(7)
    (ack,) = sent(session.receive(delivery(2, 9, 3, 4, final=True)))
    assert (ack.last_sequence_number, ack.delivery_sequence) == (0, 7)
    assert session.watermark == 7
    # A duplicate final batch does not complete the receive side.
    session.send_batch([], total_batches=1)
    session.receive(ack_for("c-2"))
    assert session.state is ClientState.SYNCING


def test_a_failed_apply_acknowledges_nothing_and_moves_nothing() -> None:
    session = connected(0)
    session.receive(delivery(0, 4, 1, 2, final=True, name="b1"))
    assert session.batch_apply_failed("b1") == []
    assert session.watermark == 0
    # The server's next batch chains from the failed one: a gap now.
    assert isinstance(session.receive(delivery(4, 6, 3, name="b2"))[0], BatchIgnored)
    # Its re-push from our real position is applied.
    assert session.receive(delivery(0, 6, 1, 2, 3, name="b3"))[0] == ApplyBatch(
        delivery(0, 6, 1, 2, 3, name="b3")
    )
    with pytest.raises(LocalProtocolError):
        session.batch_applied("b1")


def test_batches_wait_while_an_apply_is_outstanding() -> None:
    session = connected(0)
    first, second, duplicate = (
        delivery(0, 2, 1, name="b1"),
        delivery(2, 5, 2, name="b2"),
        delivery(0, 5, 1, 2, name="b3"),
    )
    assert session.receive(first) == [ApplyBatch(first)]
    assert session.receive(second) == []
    assert session.receive(duplicate) == []
    actions = session.batch_applied("b1")
    assert actions[-1] == ApplyBatch(second)
    actions = session.batch_applied("b2")
    acks = sent(actions)
    assert [(a.acknowledged_message_id, a.delivery_sequence) for a in acks] == [
        ("b2", 5),
        ("b3", 5),
    ]
    assert acks[1].last_sequence_number == 0


def test_legacy_batches_are_always_acknowledged() -> None:
    session = connected(0)
    session.receive(legacy(1, 2, name="l1"))
    (ack,) = sent(session.batch_applied("l1"))
    assert (ack.last_sequence_number, ack.delivery_sequence) == (2, None)
    session.receive(legacy(3, name="l2"))
    (ack,) = sent(session.batch_apply_failed("l2"))
    assert ack.acknowledged_message_id == "l2"
    session.receive(legacy(name="l3"))
    (ack,) = sent(session.batch_applied("l3"))
    assert ack.last_sequence_number == 0


def test_a_delivery_batch_whose_max_is_below_its_base_is_fatal() -> None:
    session = connected(3)
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive(delivery(3, 2))
    assert caught.value.fatal
    assert session.closed


def test_streaming_needs_both_directions_complete_in_either_order() -> None:
    for receive_first in (True, False):
        session = connected(0)
        final = delivery(0, 3, 1, 2, 3)
        if receive_first:
            session.receive(final)
            assert ReachedStreaming() not in session.batch_applied("b")
            (delta,) = sent(session.send_batch([], total_batches=1))
            assert ReachedStreaming() in session.receive(ack_for(delta.message_id))
        else:
            (delta,) = sent(session.send_batch([], total_batches=1))
            assert ReachedStreaming() not in session.receive(ack_for(delta.message_id))
            session.receive(final)
            assert ReachedStreaming() in session.batch_applied("b")
        assert session.state is ClientState.STREAMING


def test_a_non_final_delta_batch_does_not_complete_the_send_side() -> None:
    session = connected(0, window=2)
    session.receive(delivery(0, 0))
    session.batch_applied("b")
    session.send_batch([make_op(1)], is_final=False, total_batches=2)
    session.send_batch([make_op(2)], is_final=True, batch_index=1, total_batches=2)
    assert ReachedStreaming() not in session.receive(ack_for("c-2"))
    assert ReachedStreaming() in session.receive(ack_for("c-3"))


def test_one_batch_in_flight_by_default() -> None:
    session = connected(0)
    assert session.can_send_batch
    session.send_batch([make_op(1)])
    assert not session.can_send_batch
    with pytest.raises(LocalProtocolError):
        session.send_batch([make_op(2)])
    (acknowledged,) = session.receive(ack_for("c-1"))
    assert isinstance(acknowledged, BatchAcknowledged)
    assert acknowledged.batch.operations == (make_op(1),)
    assert session.can_send_batch


def test_acknowledgments_must_name_the_oldest_batch_in_flight() -> None:
    session = connected(0, window=3)
    for seq in (1, 2, 3):
        session.send_batch([make_op(seq)])
    assert [b.message_id for b in session.in_flight] == ["c-1", "c-2", "c-3"]
    for wrong in ("c-2", "c-3", "someone-else"):
        with pytest.raises(RemoteProtocolError) as caught:
            session.receive(ack_for(wrong))
        assert caught.value.code == "UNEXPECTED_ACKNOWLEDGMENT"
        assert not caught.value.fatal
    assert len(session.in_flight) == 3  # nothing left the queue unconfirmed
    acked = [others(session.receive(ack_for(name)))[0] for name in ("c-1", "c-2", "c-3")]
    assert [a.batch.operations[0].sequence_number for a in acked] == [1, 2, 3]  # type: ignore[union-attr]
    with pytest.raises(RemoteProtocolError):
        session.receive(ack_for("c-3"))


def test_other_server_messages() -> None:
    session = connected(0)
    rejected = OperationRejected(
        message_id="x",
        operation_id="op",
        collection="c",
        record_id="r",
        code="FORBIDDEN",
        message="no",
        retriable=False,
    )
    assert session.receive(rejected) == [OperationRejectedReceived(rejected)]
    awareness = AwarenessUpdate(message_id="a", client_id=0, states={})
    assert session.receive(awareness) == [SideChannelReceived(awareness)]
    error = ErrorMessage(message_id="e", code="RATE_LIMIT", message="slow down", retriable=True)
    assert session.receive(error) == [ErrorReceived(error)]
    assert not session.closed  # the engine decides what an error means
    for unexpected in (
        response(),
        Handshake(message_id="h", node_id="n", version_vector={}, schema_version=1),
    ):
        with pytest.raises(RemoteProtocolError) as caught:
            session.receive(unexpected)
        assert (caught.value.code, caught.value.fatal) == ("UNEXPECTED_MESSAGE", False)


def test_batches_before_the_response_are_fatal() -> None:
    session = ClientSession(node_id="n")
    session.handshake(version_vector={})
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive(legacy(1))
    assert caught.value.fatal
    assert session.closed


def test_side_channels_can_be_sent_after_acceptance_only() -> None:
    session = ClientSession(node_id="n")
    message = AwarenessUpdate(message_id="a", client_id=7, states={"7": None})
    with pytest.raises(LocalProtocolError):
        session.send_side_channel(message)
    session.handshake(version_vector={})
    session.receive(response())
    assert sent(session.send_side_channel(message)) == [message]
    with pytest.raises(LocalProtocolError):
        session.send_side_channel(ack_for("x"))  # type: ignore[arg-type]
