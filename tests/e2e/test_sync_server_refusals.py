"""Bad input gets the documented code (and a close when it is fatal); nothing bad is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from kora_server_harness import (
    WAIT,
    JsonClient,
    batch_frame,
    captured,
    handshake,
    json_client,
    make_op,
    now_ms,
)
from trio_websocket import ConnectionClosed

from kora.core.operations import operation_to_wire
from kora.server import (
    AuthContext,
    MemoryServerStore,
    MixedAuthProvider,
    ServerLimits,
    SyncServer,
    TokenFileAuthProvider,
)

TOKENS = TokenFileAuthProvider.from_mapping(
    {
        "good": {"user_id": "alice", "scopes": {"todos": {"userId": "alice"}}},
        "admin": {"user_id": "admin"},
    }
)


async def expect_close(client: JsonClient) -> int:
    """Read until the server closes; return the close code."""
    with trio.fail_after(WAIT):
        while True:
            try:
                await client.ws.get_message()
            except ConnectionClosed as closed:
                return int(closed.reason.code)


async def rejected_and_acked(
    client: JsonClient, frame: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    await client.send(frame)
    messages = await client.receive_until("acknowledgment")
    return messages[:-1], messages[-1]


async def test_bad_token_gets_auth_failed_and_a_close(start_server: Any, vectors_dir: Path) -> None:
    async with start_server(auth=TOKENS) as server, json_client(server.url) as client:
        bad = captured(vectors_dir, "auth", "c4", "c2s")[0]["frame"]  # authToken "bad"
        await client.send(bad)
        error = await client.receive()
        assert error["type"] == "error"
        assert (error["code"], error["message"], error["retriable"]) == (
            "AUTH_FAILED",
            "Authentication failed",
            False,
        )
        assert await expect_close(client) == 4401


async def test_good_token_gets_its_scope(start_server: Any, vectors_dir: Path) -> None:
    async with start_server(auth=TOKENS) as server, json_client(server.url) as client:
        await client.send(captured(vectors_dir, "auth", "c1", "c2s")[0]["frame"])
        response = await client.receive()
        assert response["accepted"] is True
        assert response["acceptedScope"] == {"todos": {"userId": "alice"}}


async def test_schema_mismatch_is_refused_with_the_range(start_server: Any) -> None:
    async with start_server(schema_versions=(2, 3)) as server, json_client(server.url) as client:
        await client.send(handshake("node-1", schema_version=1))
        response = await client.receive()
        assert response["type"] == "handshake-response"
        assert response["accepted"] is False
        assert response["rejectReason"] == (
            "SCHEMA_MISMATCH: client schema version 1 not in supported range [2, 3]"
        )
        assert (response["supportedSchemaMin"], response["supportedSchemaMax"]) == (2, 3)
        assert "serverTime" in response
        assert "selectedWireFormat" not in response
        assert await expect_close(client) == 1000


async def test_batch_before_handshake_gets_an_error_and_a_close(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.send(batch_frame([make_op("node-1", 1)]))
        error = await client.receive()
        assert (error["type"], error["code"]) == ("error", "HANDSHAKE_REQUIRED")
        assert await expect_close(client) == 1008
    assert await server.context.store.operation_count() == 0


async def test_out_of_scope_write_is_rejected_not_stored(start_server: Any) -> None:
    async with start_server(auth=TOKENS) as server, json_client(server.url) as client:
        await client.connect("node-1", token="good", scope={"todos": {"userId": "alice"}})
        mine = make_op("node-1", 1, data={"title": "a", "userId": "alice"})
        theirs = make_op("node-1", 2, data={"title": "b", "userId": "bob"})
        other_collection = make_op("node-1", 3, collection="secrets", data={"userId": "alice"})
        rejections, ack = await rejected_and_acked(
            client, batch_frame([mine, theirs, other_collection])
        )
        assert [(r["operationId"], r["code"], r["retriable"]) for r in rejections] == [
            (theirs.id, "SCOPE_VIOLATION", False),
            (other_collection.id, "SCOPE_VIOLATION", False),
        ]
        assert ack["lastSequenceNumber"] == 3
        assert await server.context.store.operation_count() == 1


async def test_client_can_only_narrow_its_scope(start_server: Any) -> None:
    async with start_server(auth=TOKENS) as server, json_client(server.url) as client:
        messages = await client.connect(
            "node-1", token="good", scope={"todos": {"userId": "bob"}, "secrets": {}}
        )
        assert messages[0]["acceptedScope"] == {"todos": {"userId": "alice"}}


async def test_scope_change_resets_the_watermark_and_says_so(start_server: Any) -> None:
    async with start_server(auth=TOKENS) as server:
        async with json_client(server.url) as writer:
            await writer.connect("node-w", token="good", scope={"todos": {"userId": "alice"}})
            await writer.send(batch_frame([make_op("node-w", 1, data={"userId": "alice"})]))
            await writer.receive()
        async with json_client(server.url) as client:
            # No syncScope, but auth scopes it: the resolved scope differs from what it sent.
            messages = await client.connect("node-r", token="good", last_delivery_sequence=1)
            response, final = messages[0], messages[-1]
            assert response["serverMaxDeliverySequence"] == 0
            assert final["baseDeliverySequence"] == 0
            assert len(final["operations"]) == 1
        async with json_client(server.url) as client:
            # Same scope as resolved: the watermark is kept.
            messages = await client.connect(
                "node-r",
                token="good",
                last_delivery_sequence=1,
                scope={"todos": {"userId": "alice"}},
            )
            assert messages[0]["serverMaxDeliverySequence"] == 1
            assert messages[-1]["baseDeliverySequence"] == 1


async def test_forged_id_is_rejected(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        op = make_op("node-1", 1)
        forged = attrs.evolve(op, id="0" * 64)
        rejections, ack = await rejected_and_acked(client, batch_frame([forged]))
        assert [(r["operationId"], r["code"]) for r in rejections] == [("0" * 64, "INVALID_ID")]
        assert ack["lastSequenceNumber"] == 1
    assert await server.context.store.operation_count() == 0


async def test_far_future_timestamp_is_rejected(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        future = make_op("node-1", 1, wall_time=now_ms() + 120_000)
        ok = make_op("node-1", 2)
        rejections, _ = await rejected_and_acked(client, batch_frame([future, ok]))
        assert [(r["operationId"], r["code"]) for r in rejections] == [
            (future.id, "INVALID_TIMESTAMP")
        ]
    assert await server.context.store.operation_count() == 1


async def test_logical_counter_over_the_cap_is_rejected(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        wire = operation_to_wire(make_op("node-1", 1))
        wire["timestamp"] = {**wire["timestamp"], "logical": 100_000}
        rejections, ack = await rejected_and_acked(client, batch_frame([wire]))
        # The codec refuses the shape; the op is named and refused alone, the batch acked.
        assert [r["code"] for r in rejections] == ["INVALID_OPERATION"]
        assert ack["lastSequenceNumber"] == 1


async def test_malformed_operation_is_refused_alone(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        good = make_op("node-1", 1)
        broken = operation_to_wire(make_op("node-1", 2))
        del broken["causalDeps"]
        rejections, ack = await rejected_and_acked(client, batch_frame([broken, good]))
        assert [(r["operationId"], r["code"]) for r in rejections] == [
            (broken["id"], "INVALID_OPERATION")
        ]
        assert ack["lastSequenceNumber"] == 1
    assert await server.context.store.operation_count() == 1


async def test_oversized_operation_is_rejected(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        big = make_op("node-1", 1, data={"blob": "x" * (300 * 1024)})
        rejections, _ = await rejected_and_acked(client, batch_frame([big]))
        assert [r["code"] for r in rejections] == ["OPERATION_TOO_LARGE"]


async def test_oversized_frame_closes_with_1009(start_server: Any) -> None:
    limits = ServerLimits(ping_interval=None, max_message_bytes=64 * 1024, shutdown_timeout=3.0)
    async with start_server(limits=limits) as server:
        async with json_client(server.url) as client:
            await client.connect("node-1")
            await client.send(batch_frame([make_op("node-1", 1, data={"blob": "x" * 70_000})]))
            assert await expect_close(client) == 1009
        assert await server.context.store.operation_count() == 0


async def test_anonymous_write_outside_anonymous_scopes(start_server: Any) -> None:
    auth = MixedAuthProvider(primary=TOKENS, anonymous_scopes={"guestbook": {}})
    async with start_server(auth=auth) as server:
        async with json_client(server.url) as client:
            messages = await client.connect("node-anon")
            assert messages[0]["acceptedScope"] == {"guestbook": {}}
            allowed = make_op("node-anon", 1, collection="guestbook", data={"text": "hi"})
            denied = make_op("node-anon", 2, collection="todos", data={"title": "x"})
            rejections, _ = await rejected_and_acked(client, batch_frame([allowed, denied]))
            assert [(r["operationId"], r["code"]) for r in rejections] == [
                (denied.id, "SCOPE_VIOLATION")
            ]
        assert await server.context.store.operation_count() == 1


async def test_duplicates_are_acknowledged_and_stored_once(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        op = make_op("node-1", 1)
        for _ in range(2):
            rejections, ack = await rejected_and_acked(client, batch_frame([op, op]))
            assert rejections == []
            assert ack["lastSequenceNumber"] == 1
    assert await server.context.store.operation_count() == 1


async def test_rate_limit_refuses_the_whole_batch_retriably(start_server: Any) -> None:
    limits = ServerLimits(ping_interval=None, ops_per_minute=60, ops_burst=3, shutdown_timeout=3.0)
    async with start_server(limits=limits) as server:
        async with json_client(server.url) as client:
            await client.connect("node-1")
            first = batch_frame([make_op("node-1", s) for s in (1, 2)])
            _, _ack = await rejected_and_acked(client, first)
            await client.send(batch_frame([make_op("node-1", s) for s in (3, 4)]))
            error = await client.receive()
            assert (error["type"], error["code"], error["retriable"]) == (
                "error",
                "RATE_LIMIT",
                True,
            )
            assert await expect_close(client) == 4429
        assert await server.context.store.operation_count() == 2


async def test_handshake_timeout_closes(start_server: Any) -> None:
    limits = ServerLimits(ping_interval=None, handshake_timeout=0.2, shutdown_timeout=3.0)
    async with start_server(limits=limits) as server, json_client(server.url) as client:
        error = await client.receive()
        assert (error["code"], error["retriable"]) == ("HANDSHAKE_TIMEOUT", True)
        assert await expect_close(client) == 4401


async def test_undecodable_frame_closes(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        await client.send('{"type":"operation-batch","messageId":"m","messageId":"x"}')
        error = await client.receive()
        assert (error["type"], error["code"]) == ("error", "DUPLICATE_KEY")
        assert await expect_close(client) in (1007, 1008)


async def test_side_channel_messages_are_tolerated(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        await client.send(
            json.dumps({"type": "awareness-update", "messageId": "a", "clientId": 7, "states": {}})
        )
        await client.send(json.dumps({"type": "awareness-update", "messageId": "b"}))  # malformed
        _, ack = await rejected_and_acked(client, batch_frame([make_op("node-1", 1)]))
        assert ack["lastSequenceNumber"] == 1


async def test_duplicate_handshake_gets_an_error_but_keeps_the_session(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        await client.send(handshake("node-1"))
        error = await client.receive()
        assert error["code"] == "DUPLICATE_HANDSHAKE"
        _, ack = await rejected_and_acked(client, batch_frame([make_op("node-1", 1)]))
        assert ack["type"] == "acknowledgment"


@pytest.mark.parametrize("token", ["admin"])
async def test_unscoped_token_sees_everything(start_server: Any, token: str) -> None:
    async with start_server(auth=TOKENS) as server, json_client(server.url) as client:
        messages = await client.connect("node-1", token=token)
        assert "acceptedScope" not in messages[0]


async def test_auth_provider_failure_is_retriable(start_server: Any) -> None:
    async def broken(token: str) -> AuthContext | None:
        raise RuntimeError("identity provider down")

    from kora.server import TokenAuthProvider

    async with (
        start_server(auth=TokenAuthProvider(broken)) as server,
        json_client(server.url) as client,
    ):
        await client.send(handshake("node-1", token="t"))
        error = await client.receive()
        assert (error["code"], error["retriable"]) == ("SYNC_ERROR", True)
        assert await expect_close(client) == 1011


async def test_memory_store_is_left_open(start_server: Any) -> None:
    async with MemoryServerStore() as store:
        async with start_server(store=store):
            pass
        assert await store.operation_count() == 0
