"""A reference client's frames replayed against our server over a real WebSocket."""

from __future__ import annotations

import json
from pathlib import Path

from kora_server_harness import (
    ack_frame,
    batch_frame,
    captured,
    handshake,
    json_client,
    make_op,
)

from kora.server import SyncServer


async def test_replayed_reference_conversation(server: SyncServer, vectors_dir: Path) -> None:
    c1 = captured(vectors_dir, "json", "c1", "c2s")
    async with json_client(server.url) as client:
        await client.send(c1[0]["frame"])  # handshake, lastDeliverySequence 0
        response = await client.receive()
        assert response["type"] == "handshake-response"
        assert response["accepted"] is True
        assert response["selectedWireFormat"] == "json"  # never "protobuf" (spec 13.1)
        assert response["serverMaxDeliverySequence"] == 0
        assert isinstance(response["serverTime"], int)
        final = await client.receive()
        assert final == {
            "type": "operation-batch",
            "messageId": final["messageId"],
            "operations": [],
            "isFinal": True,
            "batchIndex": 0,
            "baseDeliverySequence": 0,
            "maxDeliverySequence": 0,
        }
        acks = []
        for line in c1[1:]:
            await client.send(line["frame"])
            if line["type"] == "operation-batch":
                ack = await client.receive()
                assert ack["type"] == "acknowledgment"
                assert ack["acknowledgedMessageId"] == json.loads(line["frame"])["messageId"]
                acks.append(ack["lastSequenceNumber"])
        assert acks == [0, 1, 3]

    # A second client, as the captured c2, gets the three operations in one delivery batch.
    c2 = captured(vectors_dir, "json", "c2", "c2s")
    expected = next(
        json.loads(line["frame"])
        for line in captured(vectors_dir, "json", "c2", "s2c")
        if line["type"] == "operation-batch"
    )
    async with json_client(server.url) as client:
        await client.send(c2[0]["frame"])
        response = await client.receive()
        assert response["serverMaxDeliverySequence"] == 3
        batch = await client.receive()
        assert batch["operations"] == expected["operations"]
        assert (batch["baseDeliverySequence"], batch["maxDeliverySequence"]) == (0, 3)
        assert batch["isFinal"] is True


async def test_second_connection_receives_operations_live(
    server: SyncServer, vectors_dir: Path
) -> None:
    reader_frames = captured(vectors_dir, "live", "c1", "c2s")
    writer_frames = captured(vectors_dir, "live", "c2", "c2s")
    async with json_client(server.url) as reader, json_client(server.url) as writer:
        await reader.send(reader_frames[0]["frame"])
        await reader.receive_until("operation-batch")
        await writer.send(writer_frames[0]["frame"])
        await writer.receive_until("operation-batch")
        writes = [line for line in writer_frames if line["type"] == "operation-batch"][1:]
        await writer.send(writes[0]["frame"])
        assert (await writer.receive())["lastSequenceNumber"] == 1

        live = await reader.receive()
        assert live["type"] == "operation-batch"
        assert [op["data"]["title"] for op in live["operations"]] == ["live-1"]
        assert (live["baseDeliverySequence"], live["maxDeliverySequence"]) == (0, 1)
        await reader.send(ack_frame(live["messageId"], 1))

        await writer.send(writes[1]["frame"])
        assert (await writer.receive())["lastSequenceNumber"] == 3
        live = await reader.receive()
        # Chained from the previous batch; nothing is sent twice.
        assert (live["baseDeliverySequence"], live["maxDeliverySequence"]) == (1, 3)
        assert [op["data"]["title"] for op in live["operations"]] == ["live-2", "live-3"]


async def test_writer_does_not_get_its_own_operations_back(server: SyncServer) -> None:
    async with json_client(server.url) as writer:
        await writer.connect("node-w")
        await writer.send(batch_frame([make_op("node-w", 1)]))
        assert (await writer.receive())["type"] == "acknowledgment"
        assert await writer.nothing_within(0.3)


async def test_reconnect_resumes_from_the_watermark(server: SyncServer) -> None:
    async with json_client(server.url) as writer:
        await writer.connect("node-a")
        await writer.send(batch_frame([make_op("node-a", 1), make_op("node-a", 2)]))
        await writer.receive()
    async with json_client(server.url) as other:
        await other.connect("node-b")
        await other.send(batch_frame([make_op("node-b", 1)]))
        await other.receive()
    async with json_client(server.url) as client:
        messages = await client.connect("node-a", last_delivery_sequence=2)
        final = messages[-1]
        # Base is the client's watermark; its own ops are not resent.
        assert (final["baseDeliverySequence"], final["maxDeliverySequence"]) == (2, 3)
        assert [op["nodeId"] for op in final["operations"]] == ["node-b"]
    async with json_client(server.url) as client:
        messages = await client.connect("node-a", last_delivery_sequence=0)
        # From 0 a client is restoring, so it gets its own operations too.
        assert len(messages[-1]["operations"]) == 3


async def test_delivery_batches_chain_and_split(start_server) -> None:  # type: ignore[no-untyped-def]
    async with start_server(batch_size=2) as server:
        async with json_client(server.url) as writer:
            await writer.connect("node-a")
            await writer.send(batch_frame([make_op("node-a", seq) for seq in range(1, 6)]))
            await writer.receive()
        async with json_client(server.url) as reader:
            messages = await reader.connect("node-r")
    batches = [m for m in messages if m["type"] == "operation-batch"]
    assert [(b["baseDeliverySequence"], b["maxDeliverySequence"]) for b in batches] == [
        (0, 2),
        (2, 4),
        (4, 5),
    ]
    assert [b["isFinal"] for b in batches] == [False, False, True]
    assert [b["batchIndex"] for b in batches] == [0, 1, 2]
    assert all("cursor" not in b and "totalBatches" not in b for b in batches)


async def test_legacy_client_gets_a_version_vector_delta(server: SyncServer) -> None:
    async with json_client(server.url) as writer:
        await writer.connect("node-a")
        await writer.send(batch_frame([make_op("node-a", 1), make_op("node-a", 2)]))
        await writer.receive()
    async with json_client(server.url) as legacy:
        messages = await legacy.connect(
            "node-l", last_delivery_sequence=None, version_vector={"node-a": 1}
        )
        response, batch = messages
        assert "serverMaxDeliverySequence" not in response
        assert batch["totalBatches"] == 1
        assert batch["isFinal"] is True
        assert "maxDeliverySequence" not in batch
        assert [op["sequenceNumber"] for op in batch["operations"]] == [2]
        # Live relays are legacy batches too.
        async with json_client(server.url) as writer:
            await writer.connect("node-a", last_delivery_sequence=2)
            await writer.send(batch_frame([make_op("node-a", 3)]))
            await writer.receive()
        relay = await legacy.receive()
        assert [op["sequenceNumber"] for op in relay["operations"]] == [3]
        assert "maxDeliverySequence" not in relay


async def test_unacknowledged_delivery_is_sent_again(start_server) -> None:  # type: ignore[no-untyped-def]
    from kora.server import ServerLimits

    limits = ServerLimits(ping_interval=None, redelivery_interval=0.2, shutdown_timeout=3.0)
    async with (
        start_server(limits=limits) as server,
        json_client(server.url) as reader,
        json_client(server.url) as writer,
    ):
        await reader.connect("node-r")
        await writer.connect("node-w")
        await writer.send(batch_frame([make_op("node-w", 1)]))
        first = await reader.receive()
        # The reader never acknowledges: after the redelivery interval the same
        # operations come again, based at the acknowledged position.
        again = await reader.receive(within=3)
        assert again["operations"] == first["operations"]
        assert again["baseDeliverySequence"] == first["baseDeliverySequence"] == 0
        await reader.send(ack_frame(again["messageId"], again["maxDeliverySequence"]))
        assert await reader.nothing_within(0.6)


async def test_binary_format_when_the_client_offers_it(server: SyncServer) -> None:
    from kora.core.json_types import JsonValue
    from kora.protocol.binary_codec import BinaryCodec
    from kora.protocol.messages import Acknowledgment, OperationBatch

    codec = BinaryCodec()
    async with json_client(server.url) as client:
        hello: dict[str, JsonValue] = json.loads(handshake("node-pb"))
        hello["supportedWireFormats"] = ["kora-pb1", "json"]
        await client.send(json.dumps(hello))
        response = await client.receive()  # the response itself is always JSON
        assert response["selectedWireFormat"] == "kora-pb1"
        final = codec.decode(await client.ws.get_message())
        assert isinstance(final, OperationBatch)
        assert final.is_final
        batch = OperationBatch(
            message_id="b1", operations=(make_op("node-pb", 1),), is_final=True, batch_index=0
        )
        await client.send(codec.encode(batch))
        ack = codec.decode(await client.ws.get_message())
        assert isinstance(ack, Acknowledgment)
        assert (ack.acknowledged_message_id, ack.last_sequence_number) == ("b1", 1)
