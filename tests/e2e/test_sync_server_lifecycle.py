"""/health, /metrics, connection cap, Origin allow-list, graceful shutdown, long-polling."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from kora_server_harness import (
    WAIT,
    batch_frame,
    handshake,
    json_client,
    make_op,
    now_ms,
)
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from kora.server import ServerLimits, SyncServer
from kora.server.long_poll import BINARY_CONTENT_TYPE, decode_varint_frames


async def test_health(server: SyncServer) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        response = await http.get(f"{server.http_url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["sessions"] == 0
    assert isinstance(body["version"], str)
    assert body["uptime"] >= 0


async def test_metrics_count_sessions_operations_and_rejections(server: SyncServer) -> None:
    async with json_client(server.url) as client:
        await client.connect("node-1")
        good = make_op("node-1", 1)
        future = make_op("node-1", 2, wall_time=now_ms() + 3_600_000)
        await client.send(batch_frame([good, future]))
        await client.receive_until("acknowledgment")
        async with httpx.AsyncClient(timeout=WAIT) as http:
            health = (await http.get(f"{server.http_url}/health")).json()
            response = await http.get(f"{server.http_url}/metrics")
    assert health["sessions"] == 1
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'kora_sessions{transport="websocket"} 1' in text
    assert "kora_operations_received_total 2" in text
    assert "kora_operations_applied_total 1" in text
    assert 'kora_operation_rejections_total{code="INVALID_TIMESTAMP"} 1' in text
    assert 'kora_store_seconds_count{call="append_batch"} 1' in text
    assert "# TYPE kora_store_seconds histogram" in text


async def test_unknown_paths_are_404(server: SyncServer) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        assert (await http.get(f"{server.http_url}/nope")).status_code == 404
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"{server.url}elsewhere", connect_timeout=WAIT):
            pass
    assert rejected.value.status_code == 404


async def test_max_connections_closes_with_4029(start_server: Any) -> None:
    limits = ServerLimits(ping_interval=None, max_connections=1, shutdown_timeout=3.0)
    async with start_server(limits=limits) as server, json_client(server.url) as first:
        await first.connect("node-1")
        async with json_client(server.url) as second:
            error = await second.receive()
            assert (error["code"], error["retriable"]) == ("MAX_CONNECTIONS", True)
            with trio.fail_after(WAIT), pytest.raises(ConnectionClosed) as closed:
                await second.ws.get_message()
            assert closed.value.reason.code == 4029
        # The first session is unaffected.
        await first.send(batch_frame([make_op("node-1", 1)]))
        assert (await first.receive())["type"] == "acknowledgment"


async def test_origin_allow_list(start_server: Any) -> None:
    async with start_server(allowed_origins=["https://app.example"]) as server:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(
                server.url,
                extra_headers=[(b"origin", b"https://evil.example")],
                connect_timeout=WAIT,
            ):
                pass
        assert rejected.value.status_code == 403
        async with json_client(
            server.url, extra_headers=[(b"origin", b"https://app.example")]
        ) as client:
            await client.connect("node-1")
        async with httpx.AsyncClient(timeout=WAIT) as http:
            response = await http.post(
                f"{server.http_url}/kora/sync/handshake",
                content=handshake("node-2"),
                headers={"origin": "https://evil.example"},
            )
        assert response.status_code == 403
        assert len(server.context.sessions) == 0


async def test_graceful_shutdown_closes_sessions_with_1001(start_server: Any) -> None:
    async with start_server() as server:
        async with json_client(server.url) as client:
            await client.connect("node-1")
            server.shutdown()
            with trio.fail_after(WAIT), pytest.raises(ConnectionClosed) as closed:
                await client.ws.get_message()
            assert closed.value.reason.code == 1001
        with trio.fail_after(WAIT):
            await server.wait_stopped()


async def test_shutdown_finishes_the_batch_in_progress(start_server: Any) -> None:
    from kora.server import MemoryServerStore

    class SlowStore(MemoryServerStore):
        async def append_batch(self, ops: Any, **kwargs: Any) -> Any:
            await trio.sleep(0.3)
            return await super().append_batch(ops, **kwargs)

    async with SlowStore() as store, start_server(store=store) as server:
        async with json_client(server.url) as client:
            await client.connect("node-1")
            await client.send(batch_frame([make_op("node-1", 1)]))
            await trio.sleep(0.05)  # the batch is now being appended
            server.shutdown()
            ack = await client.receive()
            assert ack["type"] == "acknowledgment"
            with trio.fail_after(WAIT), pytest.raises(ConnectionClosed) as closed:
                await client.ws.get_message()
            assert closed.value.reason.code == 1001
        assert await store.operation_count() == 1


# ---------------------------------------------------------------- long-polling


async def lp_handshake(
    http: httpx.AsyncClient, server: SyncServer, frame: str
) -> tuple[str, int, list[Any]]:
    response = await http.post(
        f"{server.http_url}/kora/sync/handshake",
        content=frame,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session"] == response.headers["kora-session"]
    return body["session"], body["cursor"], body["frames"]


async def test_long_poll_round_trip(server: SyncServer) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        session, cursor, frames = await lp_handshake(http, server, handshake("node-lp"))
        assert [f["type"] for f in frames] == ["handshake-response", "operation-batch"]
        assert frames[1]["isFinal"] is True
        base = f"{server.http_url}/kora/sync/{session}"

        op = make_op("node-lp", 1)
        sent = await http.post(f"{base}/send?seq=1", content=f"[{batch_frame([op])}]")
        assert sent.status_code == 202
        retried = await http.post(f"{base}/send?seq=1", content=f"[{batch_frame([op])}]")
        assert retried.json() == {"duplicate": True}

        polled = await http.get(f"{base}/poll", params={"cursor": cursor})
        assert polled.status_code == 200
        body = polled.json()
        assert [f["type"] for f in body["frames"]] == ["acknowledgment"]
        assert body["cursor"] == cursor + 1

        # A lost response loses nothing: the same cursor gets the same frames again.
        again = (await http.get(f"{base}/poll", params={"cursor": cursor})).json()
        assert again["frames"] == body["frames"]

        # A WebSocket client's write reaches the long-poll client live.
        async with json_client(server.url) as ws_client:
            await ws_client.connect("node-ws")
            await ws_client.send(batch_frame([make_op("node-ws", 1)]))
            await ws_client.receive()
        live = (await http.get(f"{base}/poll", params={"cursor": body["cursor"]})).json()
        batch = live["frames"][0]
        assert batch["type"] == "operation-batch"
        assert [o["nodeId"] for o in batch["operations"]] == ["node-ws"]

        assert (await http.delete(base)).status_code == 204
        gone = await http.get(f"{base}/poll", params={"cursor": live["cursor"]})
        assert gone.status_code == 404


async def test_long_poll_holds_then_answers_empty(start_server: Any) -> None:
    limits = ServerLimits(ping_interval=None, long_poll_hold=0.3, shutdown_timeout=3.0)
    async with start_server(limits=limits) as server, httpx.AsyncClient(timeout=WAIT) as http:
        session, cursor, _ = await lp_handshake(http, server, handshake("node-lp"))
        started = trio.current_time()
        polled = await http.get(
            f"{server.http_url}/kora/sync/{session}/poll", params={"cursor": cursor}
        )
        assert polled.json()["frames"] == []
        assert trio.current_time() - started >= 0.25


async def test_long_poll_refusal_then_gone(start_server: Any) -> None:
    async with (
        start_server(schema_versions=(2, 2)) as server,
        httpx.AsyncClient(timeout=WAIT) as http,
    ):
        session, cursor, frames = await lp_handshake(http, server, handshake("node-lp"))
        assert frames[0]["accepted"] is False
        gone = await http.get(
            f"{server.http_url}/kora/sync/{session}/poll", params={"cursor": cursor}
        )
        assert gone.status_code == 410
        assert gone.json()["code"] == 1000


async def test_long_poll_binary_body_framing(server: SyncServer) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        response = await http.post(
            f"{server.http_url}/kora/sync/handshake",
            content=handshake("node-lp"),
            headers={"accept": BINARY_CONTENT_TYPE},
        )
        assert response.headers["content-type"] == BINARY_CONTENT_TYPE
        frames = [json.loads(f) for f in decode_varint_frames(response.content)]
        assert frames[0]["type"] == "handshake-response"
        assert int(response.headers["kora-cursor"]) == len(frames)


async def test_long_poll_bad_requests(server: SyncServer) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        bad = await http.post(f"{server.http_url}/kora/sync/handshake", content=b"[1,2")
        assert bad.status_code == 400
        unknown = await http.get(f"{server.http_url}/kora/sync/nope/poll")
        assert unknown.status_code == 404
        session, _cursor, _ = await lp_handshake(http, server, handshake("node-lp"))
        gap = await http.post(f"{server.http_url}/kora/sync/{session}/send?seq=5", content="[]")
        assert gap.status_code == 409
        too_big = await http.post(
            f"{server.http_url}/kora/sync/{session}/send", content=b"x" * (5 * 1024 * 1024)
        )
        assert too_big.status_code == 413
