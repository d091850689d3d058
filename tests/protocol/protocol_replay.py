"""Replay the reference's captured conversations through our session state machines.

Each connection of ``captured_conversations.jsonl`` is driven twice:

* as the *client*: a ``ClientSession`` receives the server's frames, and is asked to produce
  the client's frames at the points where the reference client sent them (handshake, its
  delta, apply confirmations).  Message ids are injected in the reference's order, so every
  frame it produces can be compared with the captured one byte for byte.
* as the *server*: a ``ServerSession`` receives the client's frames and produces the server's.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from kora.protocol import (
    ApplyBatch,
    ClientSession,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    JsonCodec,
    Message,
    OperationBatch,
    OperationsReceived,
    SendFrame,
    ServerSession,
)

CODEC = JsonCodec()


@attrs.frozen
class Line:
    scenario: str
    connection: str
    direction: str
    type: str
    frame: str

    @property
    def message(self) -> Message:
        return CODEC.decode(self.frame)


def conversations(vectors_dir: Path) -> dict[tuple[str, str], list[Line]]:
    by_connection: dict[tuple[str, str], list[Line]] = defaultdict(list)
    with (vectors_dir / "captured_conversations.jsonl").open(encoding="utf-8") as lines:
        for raw in lines:
            line = Line(**json.loads(raw))
            by_connection[(line.scenario, line.connection)].append(line)
    return dict(by_connection)


def _ids(lines: list[Line], direction: str) -> Iterator[str]:
    for line in lines:
        if line.direction == direction:
            yield line.message.message_id


def _frames(actions: list[Any]) -> list[str]:
    return [a.frame for a in actions if isinstance(a, SendFrame)]


def replay_client(lines: list[Line]) -> list[tuple[str, str]]:
    """Drive a ClientSession; returns (ours, captured) pairs of client frames."""
    ids = _ids(lines, "c2s")
    session = ClientSession(node_id="", binary=False, new_message_id=lambda: next(ids))
    produced: list[str] = []  # frames our client sent, in order
    pending_apply: list[OperationBatch] = []
    pairs: list[tuple[str, str]] = []
    for line in lines:
        message = line.message
        if line.direction == "s2c":
            for action in session.receive_frame(line.frame):
                if isinstance(action, ApplyBatch):
                    pending_apply.append(action.batch)
                elif isinstance(action, SendFrame):
                    produced.append(_as_text(action.frame))
            continue
        if isinstance(message, Handshake):
            session.node_id = message.node_id
            session.schema_version = message.schema_version
            produced.extend(
                _as_text(f)
                for f in _frames(
                    session.handshake(
                        version_vector=message.version_vector,
                        last_delivery_sequence=message.last_delivery_sequence,
                        auth_token=message.auth_token,
                        sync_scope=message.sync_scope,
                    )
                )
            )
            # We offer only JSON; the reference offered ["json","protobuf"].
            ours = CODEC.decode(produced[-1])
            assert isinstance(ours, Handshake)
            produced[-1] = CODEC.encode(
                attrs.evolve(ours, supported_wire_formats=message.supported_wire_formats)
            )
        elif isinstance(message, OperationBatch):
            produced.extend(
                _as_text(f)
                for f in _frames(
                    session.send_batch(
                        message.operations,
                        is_final=message.is_final,
                        batch_index=message.batch_index,
                        total_batches=message.total_batches,
                        cursor=message.cursor,
                    )
                )
            )
        elif not produced:
            # An acknowledgment the reference sent after applying a batch: we confirm our
            # apply here (a duplicate's re-ack, by contrast, went out on receipt).
            batch = pending_apply.pop(0)
            produced.extend(_as_text(f) for f in _frames(session.batch_applied(batch.message_id)))
        pairs.append((produced.pop(0) if produced else "<nothing>", line.frame))
    return pairs


def replay_server(lines: list[Line]) -> list[tuple[str, str]]:
    """Drive a ServerSession; returns (ours, captured) pairs of server frames."""
    ids = _ids(lines, "s2c")
    session = ServerSession(binary=False, new_message_id=lambda: next(ids))
    produced: list[str] = []
    pending: list[OperationBatch] = []
    pairs: list[tuple[str, str]] = []
    for line in lines:
        message = line.message
        if line.direction == "c2s":
            for action in session.receive_frame(line.frame):
                if isinstance(action, OperationsReceived):
                    pending.append(action.batch)
                assert not isinstance(action, SendFrame), "the server only answers when asked"
            continue
        if isinstance(message, HandshakeResponse):
            assert session.handshake is not None
            assert message.server_time is not None
            produced.extend(
                _as_text(f)
                for f in _frames(
                    session.accept_handshake(
                        node_id=message.node_id,
                        version_vector=message.version_vector,
                        schema_version=message.schema_version,
                        server_time=message.server_time,
                        delivery_start=session.handshake.last_delivery_sequence,
                        server_max_delivery_sequence=message.server_max_delivery_sequence,
                        accepted_scope=message.accepted_scope,
                    )
                )
            )
            # We select "json"; the reference answered "protobuf".
            ours = CODEC.decode(produced[-1])
            produced[-1] = CODEC.encode(
                attrs.evolve(ours, selected_wire_format=message.selected_wire_format)
            )
        elif isinstance(message, OperationBatch):
            produced.extend(
                _as_text(f)
                for f in _frames(
                    session.send_batch(
                        message.operations,
                        is_final=message.is_final,
                        batch_index=message.batch_index,
                        base_delivery_sequence=message.base_delivery_sequence,
                        max_delivery_sequence=message.max_delivery_sequence,
                    )
                )
            )
        elif message.TYPE == "acknowledgment":
            batch = pending.pop(0)
            produced.extend(_as_text(f) for f in _frames(session.batch_processed(batch.message_id)))
        elif isinstance(message, ErrorMessage):
            produced.extend(
                _as_text(f)
                for f in _frames(session.refuse_handshake(message.code, message.message))
            )
        pairs.append((produced.pop(0) if produced else "<nothing>", line.frame))
    return pairs


def _as_text(frame: str | bytes) -> str:
    assert isinstance(frame, str), "JSON was negotiated"
    return frame
