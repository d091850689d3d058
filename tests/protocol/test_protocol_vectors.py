"""The reference's own frames: every one decodes and re-encodes byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kora.core.operations import operation_to_wire
from kora.protocol import BinaryCodec, JsonCodec, OperationBatch, RemoteProtocolError

JSON = JsonCodec()
BINARY = BinaryCodec()


def load(vectors_dir: Path, name: str) -> Any:
    return json.loads((vectors_dir / name).read_text(encoding="utf-8"))


def captured_frames(vectors_dir: Path) -> list[dict[str, str]]:
    text = (vectors_dir / "captured_conversations.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_frames_vector_encodes_byte_identical(vectors_dir: Path) -> None:
    frames = load(vectors_dir, "json_frames.json")["frames"]
    assert frames
    for vector in frames:
        message = JSON.decode(vector["frame"])
        assert JSON.encode(message) == vector["frame"]
        expected = vector["decoded"]
        assert isinstance(message, OperationBatch)
        assert expected["type"] == message.TYPE
        assert message.message_id == expected["messageId"]
        assert message.is_final is expected["isFinal"]
        assert message.batch_index == expected["batchIndex"]
        assert [operation_to_wire(op) for op in message.operations] == expected["operations"]
        # Key order of the data is kept (title before completed), not canonicalized.
        assert list(message.operations[0].data or {}) == ["title", "completed"]
        assert message.operations[0].verify_id()


def test_captured_frames_decode_and_re_encode_byte_identical(vectors_dir: Path) -> None:
    frames = captured_frames(vectors_dir)
    assert len(frames) >= 50
    seen_types = set()
    for entry in frames:
        message = JSON.decode(entry["frame"])
        assert entry["type"] == message.TYPE
        assert JSON.encode(message) == entry["frame"]
        assert JSON.decode(entry["frame"].encode("utf-8")) == message
        assert BINARY.decode(BINARY.encode(message)) == message
        seen_types.add(message.TYPE)
    assert seen_types == {
        "handshake",
        "handshake-response",
        "operation-batch",
        "acknowledgment",
        "error",
    }


def test_captured_operations_keep_their_content_ids(vectors_dir: Path) -> None:
    for entry in captured_frames(vectors_dir):
        message = JSON.decode(entry["frame"])
        if isinstance(message, OperationBatch):
            assert all(op.verify_id() for op in message.operations)


def test_legacy_indexed_byte_record_is_left_alone(vectors_dir: Path) -> None:
    (vector,) = [
        v
        for v in load(vectors_dir, "json_frames.json")["decode_behaviour_vectors"]
        if v["name"].startswith("legacy indexed byte record")
    ]
    frame = _batch_with_data(vector["op_data"])
    (op,) = _single_batch(frame).operations
    # The reference would turn {"0":1,"1":2} into bytes; we keep the object (our decision).
    assert op.data == {"meta": {"0": 1, "1": 2}}
    assert JSON.encode(JSON.decode(frame)) == frame


def test_tagged_bytes_become_kora_bytes(vectors_dir: Path) -> None:
    (vector,) = [
        v
        for v in load(vectors_dir, "json_frames.json")["decode_behaviour_vectors"]
        if v["name"] == "tagged bytes"
    ]
    assert list(vector["wire_form"]) == ["__kora_bytes__"]
    frame = _batch_with_data(
        {"blob": {"__kora_bytes__": "AAEC"}, "nested": {"x": {"__kora_bytes__": "AA=="}}},
        previous={"blob": {"__kora_bytes__": "/w=="}},
    )
    (op,) = _single_batch(frame).operations
    assert op.data == {"blob": {"$koraBytes": "AAEC"}, "nested": {"x": {"__kora_bytes__": "AA=="}}}
    assert op.previous_data == {"blob": {"$koraBytes": "/w=="}}


def _batch_with_data(data: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    op = {
        "id": "9ffd310a21534d4e0d18a6514fa486bd0c3957a0ba8d279c04ce277a751e6d06",
        "nodeId": "node-1",
        "type": "update" if previous is not None else "insert",
        "collection": "todos",
        "recordId": "rec-1",
        "data": data,
        "previousData": previous,
        "timestamp": {"wallTime": 1700000000000, "logical": 0, "nodeId": "node-1"},
        "sequenceNumber": 1,
        "causalDeps": [],
        "schemaVersion": 1,
    }
    message = {
        "type": "operation-batch",
        "messageId": "m-1",
        "operations": [op],
        "isFinal": True,
        "batchIndex": 0,
    }
    return json.dumps(message, separators=(",", ":"))


def _single_batch(frame: str) -> OperationBatch:
    message = JSON.decode(frame)
    assert isinstance(message, OperationBatch)
    return message


def test_reference_protobuf_frames_are_refused_loudly(vectors_dir: Path) -> None:
    # We do not speak the reference's hand-rolled layout (spec 2.3): its frames must be
    # refused with a clear error, never half-decoded.
    frames = load(vectors_dir, "reference_protobuf_frames.json")["frames"]
    assert len(frames) >= 5
    for vector in frames:
        with pytest.raises(RemoteProtocolError):
            BINARY.decode(bytes.fromhex(vector["hex"]))
