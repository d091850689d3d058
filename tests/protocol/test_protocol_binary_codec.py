"""kora-pb1: exact round trips, compact layout, and a decoder that trusts nothing."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import google.protobuf
import pytest
from google.protobuf.internal import api_implementation

from kora.core.hlc import HLCTimestamp
from kora.core.operation import AtomicOp, AtomicOpType, Operation, OpType
from kora.protocol import (
    AwarenessUpdate,
    BinaryCodec,
    BlobChunkPush,
    BlobChunkResponse,
    ErrorMessage,
    Handshake,
    JsonCodec,
    Limits,
    LocalProtocolError,
    OperationBatch,
    RemoteProtocolError,
    YjsDocUpdate,
)
from kora.protocol._binary_common import MAP_VALUE
from kora.protocol._pb import regenerate
from kora.protocol._pb import sync_pb2 as pb

CODEC = BinaryCodec()
NODE = "01a21c24-c3bc-7dba-ac3b-d804f2178f89"
HASH = "9ffd310a21534d4e0d18a6514fa486bd0c3957a0ba8d279c04ce277a751e6d06"


def make_op(index: int = 0, **changes: Any) -> Operation:
    fields: dict[str, Any] = {
        "id": f"{index:064x}",
        "node_id": NODE,
        "type": OpType.INSERT,
        "collection": "todos",
        "record_id": "01a21c24-c3e2-77ab-a0cb-bd3fe6aefe15",
        "data": {"title": f"todo-{index}", "done": False},
        "previous_data": None,
        "timestamp": HLCTimestamp(1795768501219 + index, 0, NODE),
        "sequence_number": index + 1,
    }
    fields.update(changes)
    return Operation(**fields)


def batch_of(*operations: Operation, **changes: Any) -> OperationBatch:
    fields: dict[str, Any] = {
        "message_id": "m",
        "operations": operations,
        "is_final": True,
        "batch_index": 0,
    }
    fields.update(changes)
    return OperationBatch(**fields)


def round_trip(message: Any) -> Any:
    decoded = CODEC.decode(CODEC.encode(message))
    assert decoded == message
    return decoded


def kinds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: kinds(v) for k, v in value.items()}
    if isinstance(value, list):
        return [kinds(v) for v in value]
    return type(value).__name__


def test_numbers_keep_their_type_and_sign() -> None:
    data = {
        "int": 5,
        "float": 5.5,
        "integral_float": 5.0,
        "negative_zero": -0.0,
        "huge": 2**70,
        "tiny": -(2**70),
        "edges": [2**63 - 1, -(2**63), 2**63, 2**53 + 1],
        "bool": True,
        "nothing": None,
    }
    (op,) = round_trip(batch_of(make_op(data=data))).operations
    assert op.data is not None
    assert kinds(op.data) == kinds(data)
    assert math.copysign(1.0, op.data["negative_zero"]) == -1.0
    assert op.data["edges"] == [2**63 - 1, -(2**63), 2**63, 2**53 + 1]


def test_non_finite_floats_travel_as_null_like_json_stringify() -> None:
    message = batch_of(make_op(data={"nan": math.nan, "inf": math.inf}))
    (op,) = CODEC.decode(CODEC.encode(message)).operations
    assert op.data == {"nan": None, "inf": None}


def test_kora_bytes_travel_raw_only_when_canonical() -> None:
    payload = "A" * 400  # 300 bytes of zeros, as base64
    raw = batch_of(make_op(data={"blob": {"$koraBytes": payload}}))
    text = batch_of(make_op(data={"blob": {"x$koraBytes": payload}}))
    assert len(CODEC.encode(raw)) < len(CODEC.encode(text)) - 90
    round_trip(raw)
    for odd in (
        {"$koraBytes": "AAE"},
        {"$koraBytes": 5},
        {"$koraBytes": "AAE=", "x": 1},
        {"$koraBytes": "é"},
    ):
        round_trip(batch_of(make_op(data={"blob": odd})))


def test_ids_are_raw_when_they_can_be_and_text_otherwise() -> None:
    hashed = batch_of(make_op(id=HASH))
    upper = make_op(
        id=HASH.upper(),
        node_id=NODE.upper(),
        record_id=make_op().record_id.upper(),
        timestamp=HLCTimestamp(1795768501219, 0, NODE.upper()),
    )
    texts = batch_of(upper)
    round_trip(hashed)
    round_trip(texts)
    # 32 bytes saved on the id, 20 on the node id and 20 on the record id.
    assert len(CODEC.encode(texts)) - len(CODEC.encode(hashed)) >= 70
    for odd_id in ("x", HASH[:-1], HASH + "0", " " + HASH[1:], "0" * 64):
        round_trip(batch_of(make_op(id=odd_id)))
    for odd_uuid in (NODE[:-1], NODE.replace("-", ""), "{" + NODE[1:-1] + "}"):
        round_trip(batch_of(make_op(record_id=odd_uuid, node_id=odd_uuid)))
    # Empty ids are representable (both forms absent) but not valid operations.
    with pytest.raises(RemoteProtocolError):
        round_trip(batch_of(make_op(id="")))


def test_dependencies_round_trip_in_order() -> None:
    first = make_op(0)
    second = make_op(1, causal_deps=(first.id, "outside", HASH, first.id))
    third = make_op(2, causal_deps=(second.id, first.id, "0" * 64))
    self_dep = make_op(3, causal_deps=(make_op(3).id,))
    duplicate = make_op(0, sequence_number=9)
    decoded = round_trip(
        batch_of(first, second, third, self_dep, duplicate, make_op(5, causal_deps=(first.id,)))
    )
    assert decoded.operations[1].causal_deps == (first.id, "outside", HASH, first.id)
    # A back-reference costs a byte or two instead of 34.
    refs = batch_of(first, make_op(1, causal_deps=(first.id,)))
    hashes = batch_of(first, make_op(1, causal_deps=(HASH,)))
    assert len(CODEC.encode(refs)) < len(CODEC.encode(hashes)) - 30


def test_presence_is_kept_for_empty_objects() -> None:
    update = make_op(type=OpType.UPDATE, data={}, previous_data={}, atomic_ops={})
    decoded = round_trip(batch_of(update, make_op(1, type=OpType.DELETE, data=None)))
    assert decoded.operations[0].data == {}
    assert decoded.operations[0].atomic_ops == {}
    assert decoded.operations[1].data is None
    assert decoded.operations[1].atomic_ops is None


def test_everything_optional_survives() -> None:
    op = make_op(
        type=OpType.UPDATE,
        previous_data={"done": True},
        atomic_ops={
            "count": AtomicOp(AtomicOpType.INCREMENT, 2),
            "tags": AtomicOp(AtomicOpType.APPEND, {"a": [1]}),
        },
        transaction_id="",
        mutation_name="rename",
        schema_version=7,
        timestamp=HLCTimestamp(0, 99_999, "other-node"),
        sequence_number=0,
    )
    round_trip(
        batch_of(
            op,
            cursor="c",
            total_batches=3,
            base_delivery_sequence=0,
            max_delivery_sequence=2**53 - 1,
            extra={"x": [1.5, None]},
        )
    )
    round_trip(batch_of(is_final=False, batch_index=7))


def test_side_channels_and_base64_fallbacks() -> None:
    round_trip(
        YjsDocUpdate(message_id="y", collection="c", record_id=NODE, field="f", update="AAEC")
    )
    round_trip(YjsDocUpdate(message_id="y", collection="c", record_id="r", field="f", update="AAE"))
    round_trip(BlobChunkResponse(message_id="b", request_id="r", bytes=None))
    round_trip(BlobChunkResponse(message_id="b", request_id="r", bytes=""))
    round_trip(BlobChunkResponse(message_id="b", request_id="r", bytes="not base64!"))
    round_trip(BlobChunkPush(message_id="p", hash=HASH, bytes=""))
    round_trip(BlobChunkPush(message_id="p", hash="short", bytes="AA=="))
    round_trip(
        AwarenessUpdate(
            message_id="a", client_id=3.5, states={"1": None, "2": {"user": {"name": "x"}}}
        )
    )
    round_trip(AwarenessUpdate(message_id=NODE, client_id=0, states={}))


def test_message_ids_and_extras() -> None:
    message = ErrorMessage(
        message_id=NODE, code="C", message="m", retriable=True, extra={"k": {"n": 1}}
    )
    decoded = round_trip(message)
    assert decoded.extra == {"k": {"n": 1}}


def test_a_binary_frame_is_much_smaller_than_json_for_the_same_handshake() -> None:
    handshake = Handshake(
        message_id=NODE,
        node_id=NODE,
        version_vector={NODE: 12, "01a21c24-e2d5-7ad3-8580-05815013bf2e": 3},
        schema_version=1,
        supported_wire_formats=("kora-pb1", "json"),
        last_delivery_sequence=0,
    )
    round_trip(handshake)
    assert len(CODEC.encode(handshake)) * 2 < len(JsonCodec().encode(handshake))


# ---------------------------------------------------------------- hostile frames


def envelope_with_batch(
    *ops: pb.Operation, strings: tuple[str, ...] = ("todos",), nodes: int = 1
) -> pb.Envelope:
    envelope = pb.Envelope(message_id="m", strings=strings)
    batch = envelope.operation_batch
    batch.SetInParent()
    for _ in range(nodes):
        batch.nodes.add(text="n")
    for op in ops:
        batch.operations.append(op)
    return envelope


DETAILS = {f.name for f in pb.OperationDetails.DESCRIPTOR.fields}


def good_op(**fields: Any) -> pb.Operation:
    op = pb.Operation(
        id=bytes(32), record_text="r", wall_time_delta=1, sequence_delta=1, data_size=1
    )
    for name, value in fields.items():
        target = op.details if name in DETAILS else op
        if isinstance(value, pb.Map | pb.AtomicOps):
            getattr(target, name).CopyFrom(value)
        elif isinstance(value, list):
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return op


def refused(frame: bytes, codec: BinaryCodec = CODEC) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        codec.decode(frame)
    return caught.value


def nested_value(depth: int) -> pb.Value:
    value = pb.Value(int_value=1)
    for _ in range(depth):
        outer = pb.Value(container=pb.CONTAINER_ARRAY)
        outer.items.append(value)
        value = outer
    return value


def data_batch(value: pb.Value, keys: tuple[int, ...] = (0,)) -> pb.Envelope:
    """A batch of one insert whose data holds ``value`` under the given key indexes."""
    envelope = envelope_with_batch(good_op(data_size=len(keys) + 1))
    members = envelope.operation_batch.members
    members.keys.extend(keys)
    members.kinds = bytes([MAP_VALUE] * len(keys))
    members.values.append(value)
    return envelope


def columns_batch(data_size: int = 2, **columns: Any) -> pb.Envelope:
    """A batch of one insert taking ``data_size - 1`` members of the given columns."""
    envelope = envelope_with_batch(good_op(data_size=data_size))
    envelope.operation_batch.members.CopyFrom(pb.Map(**columns))
    return envelope


@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        (pb.Envelope(), "UNKNOWN_MESSAGE_TYPE"),
        (columns_batch(keys=[0, 0], kinds=bytes([0, 0]), data_size=3), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[0], kinds=bytes([9])), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[0], kinds=bytes([3])), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[0], kinds=bytes([0]), strs=["x"]), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[0, 0], kinds=bytes([0])), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[7], kinds=bytes([0])), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[0], kinds=bytes([0]), data_size=3), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[0], kinds=bytes([0]), data_size=1), "BINARY_DECODE_ERROR"),
        (columns_batch(keys=[0], kinds=bytes([5]), doubles=[math.nan]), "INVALID_NUMBER"),
        (envelope_with_batch(good_op(node=1)), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(collection=5)), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(id=b"\x01" * 5)), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(id=bytes(32), id_text="x")), "BINARY_DECODE_ERROR"),
        (
            envelope_with_batch(good_op(record_uuid=b"\x01" * 3, record_text="")),
            "BINARY_DECODE_ERROR",
        ),
        (  # the second operation's record both as a UUID (seen before) and as text
            envelope_with_batch(
                good_op(record_uuid=b"\x01" * 16, record_text=""),
                good_op(record_uuid=b"\x01" * 16, record_text="r"),
            ),
            "BINARY_DECODE_ERROR",
        ),
        (envelope_with_batch(good_op(record_text="")), "INVALID_OPERATION"),
        (envelope_with_batch(good_op(data_size=0)), "INVALID_OPERATION"),
        (envelope_with_batch(good_op(type=2)), "INVALID_OPERATION"),
        (envelope_with_batch(good_op(type=7)), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(timestamp_node=4)), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(wall_time_delta=-5)), "INVALID_NUMBER"),
        (envelope_with_batch(good_op(sequence_delta=2**60)), "INVALID_NUMBER"),
        (envelope_with_batch(good_op(schema_version=2**60)), "INVALID_NUMBER"),
        (envelope_with_batch(good_op(dep_refs=[0])), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(dep_refs=[5])), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(dep_texts=["x"])), "BINARY_DECODE_ERROR"),
        (envelope_with_batch(good_op(dep_refs=[0], dep_hashes=[b"\x01"])), "BINARY_DECODE_ERROR"),
        (data_batch(pb.Value()), "BINARY_DECODE_ERROR"),
        (
            data_batch(pb.Value(int_value=1), keys=(3,)),
            "BINARY_DECODE_ERROR",
        ),
        (
            data_batch(pb.Value(int_value=1), keys=(0, 0)),
            "BINARY_DECODE_ERROR",
        ),
        (
            data_batch(pb.Value(double_value=math.nan)),
            "INVALID_NUMBER",
        ),
        (
            data_batch(pb.Value(double_value=math.inf)),
            "INVALID_NUMBER",
        ),
        (
            data_batch(pb.Value(big_int_value="12")),
            "BINARY_DECODE_ERROR",
        ),
        (
            data_batch(pb.Value(big_int_value="1e99")),
            "INVALID_NUMBER",
        ),
        (
            data_batch(pb.Value(big_int_value="9" * 5000)),
            "INVALID_NUMBER",
        ),
        (
            data_batch(pb.Value(container=5)),
            "BINARY_DECODE_ERROR",
        ),
        (
            data_batch(pb.Value(container=pb.CONTAINER_OBJECT, keys=[0, 0])),
            "BINARY_DECODE_ERROR",
        ),
        (
            data_batch(pb.Value(container=pb.CONTAINER_ARRAY, keys=[0])),
            "BINARY_DECODE_ERROR",
        ),
        (data_batch(nested_value(80)), "NESTING_TOO_DEEP"),
        (
            envelope_with_batch(good_op(atomic_ops=pb.AtomicOps(fields=[0], types=[1]))),
            "BINARY_DECODE_ERROR",
        ),
        (
            envelope_with_batch(
                good_op(
                    atomic_ops=pb.AtomicOps(fields=[0], types=[9], values=[pb.Value(int_value=1)])
                )
            ),
            "BINARY_DECODE_ERROR",
        ),
        (envelope_with_batch(good_op(id=b"", id_text="")), "INVALID_OPERATION"),
        (envelope_with_batch(good_op(type=pb.OP_TYPE_UPDATE)), "INVALID_OPERATION"),
        (envelope_with_batch(good_op(logical=100_000)), "INVALID_OPERATION"),
        (
            pb.Envelope(message_id="m", message_uuid=b"\x00" * 16, error=pb.Error()),
            "BINARY_DECODE_ERROR",
        ),
        (pb.Envelope(message_uuid=b"\x00" * 15, error=pb.Error()), "BINARY_DECODE_ERROR"),
        (
            pb.Envelope(
                handshake=pb.Handshake(
                    version_vector=[pb.VersionEntry(node_text="a"), pb.VersionEntry(node_text="a")]
                )
            ),
            "BINARY_DECODE_ERROR",
        ),
        (
            pb.Envelope(
                handshake=pb.Handshake(
                    version_vector=[pb.VersionEntry(node_text="a", sequence=2**53)]
                )
            ),
            "INVALID_NUMBER",
        ),
        (pb.Envelope(handshake=pb.Handshake(schema_version=-(2**60))), "INVALID_NUMBER"),
        (
            pb.Envelope(
                acknowledgment=pb.Acknowledgment(
                    acknowledged_text="a", acknowledged_uuid=b"\x00" * 16
                )
            ),
            "BINARY_DECODE_ERROR",
        ),
    ],
)
def test_hostile_envelopes_are_refused(envelope: pb.Envelope, code: str) -> None:
    error = refused(envelope.SerializeToString())
    assert error.code == code, error


def test_garbage_and_truncation_are_refused() -> None:
    frame = CODEC.encode(batch_of(make_op(), make_op(1)))
    for cut in range(1, len(frame)):
        try:
            CODEC.decode(frame[:cut])
        except RemoteProtocolError:
            pass
    assert refused(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").code == "BINARY_DECODE_ERROR"
    assert refused(b"\x0a\x05ab").code == "BINARY_DECODE_ERROR"  # length beyond the end


def test_limits_apply_to_binary_frames() -> None:
    small = BinaryCodec(
        Limits(
            max_frame_bytes=3000,
            max_operations_per_batch=2,
            max_operation_bytes=200,
            max_version_vector_entries=2,
        )
    )
    assert (
        refused(CODEC.encode(batch_of(make_op(0), make_op(1), make_op(2))), small).code
        == "TOO_MANY_OPERATIONS"
    )
    assert (
        refused(CODEC.encode(batch_of(make_op(data={"t": "x" * 300}))), small).code
        == "OPERATION_TOO_LARGE"
    )
    assert (
        refused(CODEC.encode(batch_of(make_op(data={"t": "x" * 3000}))), small).code
        == "FRAME_TOO_LARGE"
    )
    handshake = Handshake(
        message_id="h", node_id="n", version_vector={"a": 1, "b": 2, "c": 3}, schema_version=1
    )
    assert refused(CODEC.encode(handshake), small).code == "VERSION_VECTOR_TOO_LARGE"


def test_side_channel_errors_are_not_fatal() -> None:
    envelope = pb.Envelope(
        message_id="a",
        awareness_update=pb.AwarenessUpdate(
            states=pb.Map(keys=[9], values=[pb.Value(null_value=0)])
        ),
    )
    error = refused(envelope.SerializeToString())
    assert not error.fatal
    envelope = pb.Envelope(message_id="a", awareness_update=pb.AwarenessUpdate())
    assert not refused(envelope.SerializeToString()).fatal


def test_encoding_what_the_format_cannot_carry_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        CODEC.encode(batch_of(make_op(data={"s": {1, 2}})))
    with pytest.raises(LocalProtocolError):
        CODEC.encode(batch_of(make_op(data={"s": "\ud800"})))
    with pytest.raises(LocalProtocolError):
        CODEC.encode(batch_of(make_op(sequence_number=-1, timestamp=HLCTimestamp(5, 0, NODE))))
    with pytest.raises(LocalProtocolError):
        CODEC.encode("not a message")  # type: ignore[arg-type]


def test_the_pure_python_protobuf_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_implementation, "Type", lambda: "python")
    with pytest.raises(LocalProtocolError):
        BinaryCodec()


# ---------------------------------------------------------------- generated code


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_generated_module_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    for generated in regenerate.generate(tmp_path):
        committed = regenerate.HERE / generated.name
        assert generated.read_text() == committed.read_text(), f"regenerate {committed.name}"


def test_generated_code_is_not_newer_than_the_runtime() -> None:
    source = (regenerate.HERE / "sync_pb2.py").read_text()
    match = re.search(r"^# Protobuf Python Version: (\S+)$", source, re.MULTILINE)
    assert match is not None
    gencode = _version(match.group(1))
    runtime = _version(google.protobuf.__version__)
    assert gencode[0] == runtime[0], "gencode and runtime must share the major version"
    assert gencode <= runtime


def test_table_references_cannot_amplify_a_small_frame() -> None:
    # One long key, referenced by every member of many operations: a few KB of frame would
    # be megabytes of JSON.  The decoder counts what references expand to.
    long_key = "k" * 50_000
    ops = [make_op(i, data={long_key: i}) for i in range(60)]  # 3 MB of keys as JSON
    frame = CODEC.encode(batch_of(*ops))
    assert len(frame) < 60_000
    error = refused(frame, BinaryCodec(Limits(max_frame_bytes=1_000_000)))
    assert error.code == "FRAME_TOO_LARGE"
    assert CODEC.decode(frame) == batch_of(*ops)  # within the default 4 MiB it is fine
