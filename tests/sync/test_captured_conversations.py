"""Replays the server side of the Kora.js conversations against our client.

``captured_conversations.jsonl`` holds real frames between the Kora.js reference client and
server.  For every captured connection, a fake server sends the captured server frames in
order; where the reference client sent a frame, ours must send one of the same type, with
the same fields in the same order (values differ: ids, times, node ids).  Acknowledgments
from the server are re-addressed to our batch ids.  Before a client batch with operations,
the test writes operations with the captured data, as the reference client's app did.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from sync_fakes import FakeServer, HarnessFactory

from kora.core.operation import OpType
from kora.store import LocalMutation


def _conversations(vectors_dir: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    lines = (vectors_dir / "captured_conversations.jsonl").read_text().splitlines()
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        entry = json.loads(line)
        grouped[entry["scenario"], entry["connection"]].append(entry)
    return grouped


def _shape(frame: str | bytes) -> list[Any]:
    """Field names in order, and those of each operation (the values are ours)."""
    message = json.loads(frame)
    shape: list[Any] = list(message)
    for op in message.get("operations", []):
        shape.append(list(op))
        shape.append(list(op["timestamp"]))
    return shape


CONNECTIONS = [
    ("json", "c1"),
    ("json", "c2"),
    ("auth", "c1"),
    ("auth", "c3"),
    ("auth", "c4"),
    ("live", "c1"),
    ("live", "c2"),
]


@pytest.mark.parametrize(("scenario", "connection"), CONNECTIONS)
async def test_our_client_speaks_like_the_reference(
    scenario: str,
    connection: str,
    vectors_dir: Path,
    harness: HarnessFactory,
    autojump_clock: trio.testing.MockClock,
) -> None:
    conversation = _conversations(vectors_dir)[scenario, connection]
    first = json.loads(conversation[0]["frame"])

    async def auth() -> str:
        return str(first["authToken"])

    options: dict[str, Any] = {"auth": auth} if "authToken" in first else {}
    async with harness(**options) as h:
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        our_batches: list[str] = []
        for entry in conversation:
            frame = entry["frame"]
            if entry["direction"] == "s2c":
                message = json.loads(frame)
                if message["type"] == "acknowledgment":
                    message["acknowledgedMessageId"] = our_batches.pop(0)
                    frame = json.dumps(message, separators=(",", ":"))
                await server.transport.send(frame)
                continue
            captured = json.loads(frame)
            if captured["type"] == "operation-batch" and captured["operations"]:
                await h.store.write_local_many(
                    [
                        LocalMutation(
                            type=OpType(op["type"]), collection=op["collection"], data=op["data"]
                        )
                        for op in captured["operations"]
                    ]
                )
            with trio.fail_after(10):
                ours = await server.transport.receive()
            assert _shape(ours) == _shape(frame), f"{entry['type']} differs"
            sent = json.loads(ours)
            if sent["type"] == "operation-batch":
                our_batches.append(sent["messageId"])
                assert len(sent["operations"]) == len(captured["operations"])
            if sent["type"] == "acknowledgment":
                for key in ("lastSequenceNumber", "deliverySequence"):
                    assert sent[key] == captured[key]
        await trio.testing.wait_all_tasks_blocked()
        assert server.transport.buffered == 0, "our client sent more than the reference"
        if (scenario, connection) == ("auth", "c4"):
            assert h.of("sync:auth-failed")
        else:
            assert h.of("sync:connected")


@pytest.mark.parametrize("connection", ["c1", "c2"])
async def test_our_handshake_has_the_fields_of_the_pb_scenario(
    connection: str, vectors_dir: Path, harness: HarnessFactory
) -> None:
    (entry,) = _conversations(vectors_dir)["pb", connection]
    async with harness(wire_format="auto") as h:
        await h.engine.connect()
        server = FakeServer(await h.network.accept())
        ours = json.loads(await server.transport.receive())
    assert list(ours) == list(json.loads(entry["frame"]))
    assert ours["supportedWireFormats"] == ["kora-pb1", "json"]
