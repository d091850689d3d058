"""SharedEncodings: frames built around operations encoded once are the same bytes."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_strategies import message_strategies

from kora.core.canonical import json_stringify
from kora.core.hlc import HLCTimestamp
from kora.core.operation import Operation, OpType
from kora.core.operations import operation_to_wire
from kora.protocol import (
    BinaryCodec,
    FrameCodec,
    Handshake,
    JsonCodec,
    LocalProtocolError,
    OperationBatch,
    ServerSession,
    SharedEncodings,
    WireFormat,
)

BATCHES = message_strategies(json_safe=True)[OperationBatch.TYPE]
JSON = JsonCodec()
BINARY = BinaryCodec()


def op(seq: int, *, data: dict[str, object] | None = None, previous: object = ()) -> Operation:
    return Operation(
        id=f"{seq:064x}",
        node_id="0190f0a0-0000-7000-8000-00000000000a",
        type=OpType.UPDATE,
        collection="todos",
        record_id=f"r{seq}",
        data=data if data is not None else {"title": f"t{seq}", "n": seq},  # type: ignore[arg-type]
        previous_data={"n": 0} if previous == () else previous,  # type: ignore[arg-type]
        timestamp=HLCTimestamp(1_700_000_000_000 + seq, 0, "0190f0a0-0000-7000-8000-00000000000a"),
        sequence_number=seq,
    )


def batch(ops: tuple[Operation, ...], message_id: str = "m", **fields: object) -> OperationBatch:
    options: dict[str, object] = {"is_final": True, "batch_index": 0}
    options.update(fields)
    return OperationBatch(message_id=message_id, operations=ops, **options)  # type: ignore[arg-type]


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(message=BATCHES, other_id=st.text(max_size=8))
def test_frames_are_byte_identical_to_the_plain_encoders(
    message: OperationBatch, other_id: str
) -> None:
    shared = SharedEncodings()
    assert JSON.encode(message, shared) == JSON.encode(message)
    assert BINARY.encode(message, shared) == BINARY.encode(message)
    # A second session's frame: another id, the operations from the cache.
    again = attrs.evolve(message, message_id=other_id, is_final=not message.is_final)
    assert JSON.encode(again, shared) == JSON.encode(again)
    assert BINARY.encode(again, shared) == BINARY.encode(again)
    assert BINARY.decode(BINARY.encode(again, shared)) == again


def test_each_operation_is_encoded_once_for_many_sessions() -> None:
    shared = SharedEncodings()
    ops = (op(1), op(2))
    for index in range(10):
        JSON.encode(batch(ops, f"m{index}", base_delivery_sequence=index), shared)
    assert (shared.misses, shared.hits) == (2, 18)
    # A session whose scope lets only the second one through still shares it.
    JSON.encode(batch(ops[1:]), shared)
    assert (shared.misses, shared.hits) == (2, 19)
    for index in range(10):
        BINARY.encode(batch(ops, f"m{index}", max_delivery_sequence=index), shared)
    assert (shared.misses, shared.hits) == (3, 28)  # the kora-pb1 unit is the batch


def test_an_equal_operation_shares_and_a_different_one_with_the_same_id_does_not() -> None:
    shared = SharedEncodings()
    first = op(1, previous={"title": "old"})
    JSON.encode(batch((first,)), shared)
    copy = attrs.evolve(first)
    assert JSON.encode(batch((copy,)), shared) == JSON.encode(batch((copy,)))
    assert shared.hits == 1
    # previousData is outside the content id: same id, other bytes.
    changed = attrs.evolve(first, previous_data={"title": "older"})
    assert JSON.encode(batch((changed,)), shared) == JSON.encode(batch((changed,)))
    assert BINARY.encode(batch((first,)), shared) == BINARY.encode(batch((first,)))
    assert BINARY.encode(batch((changed,)), shared) == BINARY.encode(batch((changed,)))
    assert '"older"' in JSON.encode(batch((changed,)), shared)


def test_the_caches_are_bounded_by_count_and_bytes() -> None:
    shared = SharedEncodings(max_operations=3, max_batches=2, max_bytes=100_000)
    for seq in range(1, 11):
        JSON.encode(batch((op(seq),)), shared)
        BINARY.encode(batch((op(seq),)), shared)
    assert len(shared) == 3 + 2
    small = SharedEncodings(max_bytes=16 * 200)
    for seq in range(1, 50):
        JSON.encode(batch((op(seq),)), small)
    assert small.held_bytes <= 16 * 200
    huge = op(99, data={"blob": "x" * 1000})
    JSON.encode(batch((huge,)), small)
    JSON.encode(batch((huge,)), small)
    assert small.hits == 0  # larger than a sixteenth of the budget: never kept
    small.clear()
    assert len(small) == 0
    assert small.held_bytes == 0


def test_a_remembered_text_is_used_and_the_oldest_goes_first() -> None:
    shared = SharedEncodings(max_operations=3, max_bytes=100_000)
    ops = [op(seq) for seq in range(1, 6)]
    for item in ops:
        shared.remember_json(item, json_stringify(operation_to_wire(item)))
    shared.remember_json(ops[3], json_stringify(operation_to_wire(ops[3])))  # again: stays
    assert JSON.encode(batch(tuple(ops[2:])), shared) == JSON.encode(batch(tuple(ops[2:])))
    assert (shared.misses, shared.hits) == (0, 3)
    JSON.encode(batch((ops[0],)), shared)  # trimmed: encoded again, ops[2] goes
    assert shared.misses == 1
    JSON.encode(batch((ops[2],)), shared)
    assert shared.misses == 2
    assert len(shared) == 3


def test_encoding_errors_stay_local_protocol_errors() -> None:
    shared = SharedEncodings()
    bad = op(1, data={"x": object()})
    with pytest.raises(LocalProtocolError):
        JSON.encode(batch((bad,)), shared)
    with pytest.raises(LocalProtocolError):
        BINARY.encode(batch((bad,)), shared)
    negative = attrs.evolve(op(2), sequence_number=-1)
    with pytest.raises(LocalProtocolError):
        BINARY.encode(batch((negative,)), shared)
    with pytest.raises(LocalProtocolError):
        JSON.encode(batch((op(3),), extra={"isFinal": 1}), shared)


@pytest.mark.parametrize("wire_format", list(WireFormat))
def test_server_sessions_share_and_send_the_same_frames(wire_format: WireFormat) -> None:
    shared = SharedEncodings()
    offered = ("kora-pb1", "json") if wire_format is WireFormat.KORA_PB1 else ("json",)
    ids = iter(f"id-{n}" for n in range(100))
    frames = []
    for node in ("a", "b"):
        for encodings in (shared, None):
            session = ServerSession(new_message_id=lambda: next(ids), shared_encodings=encodings)
            hello = Handshake(
                message_id="h",
                node_id=node,
                version_vector={},
                schema_version=1,
                supported_wire_formats=offered,
                last_delivery_sequence=0,
            )
            session.receive(hello)
            session.accept_handshake(
                node_id="server",
                version_vector={},
                schema_version=1,
                server_time=0,
                delivery_start=0,
                server_max_delivery_sequence=0,
            )
            (sent, *_) = session.send_delivery((op(1), op(2)), base=0, top=2)
            frames.append(sent.frame)  # type: ignore[attr-defined]
    decoder = FrameCodec()
    decoder.switch_to(wire_format)
    decoded = [attrs.evolve(decoder.decode(frame), message_id="") for frame in frames]
    assert all(message == decoded[0] for message in decoded)
    assert shared.misses == (2 if wire_format is WireFormat.JSON else 1)
    assert shared.hits == (2 if wire_format is WireFormat.JSON else 1)
