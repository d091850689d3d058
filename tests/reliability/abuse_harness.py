"""Helpers of the protocol-abuse suite (B6): raw clients, canaries and store snapshots.

Every catalogue test runs against a real server (``open_server`` on 127.0.0.1, port 0) and
checks, besides the row's own code and close code:

* the server store changed only by the operations the row means to apply (``snapshot``);
* a **canary subscriber** (an unscoped WebSocket session opened before the attack) never
  receives a rejected operation;
* a **canary writer** on a fresh connection completes write + acknowledgment, and the
  subscriber receives that write (so the server is healthy, and since delivery follows commit
  order, everything committed before it has been delivered too: no sleeping for ordering).

Network waits run under ``trio.fail_after``, so no test can hang.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from kora.core.canonical import canonical_json, json_stringify
from kora.core.hlc import HLCTimestamp
from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.core.operations import create_operation, operation_to_wire
from kora.server import (
    AuthContext,
    AuthProvider,
    MemoryServerStore,
    ServerLimits,
    ServerStore,
    SyncServer,
    open_server,
)

#: Seconds any single network wait may take (a bound, not a timing assertion).
WAIT = 5.0

#: The canaries' token when the server under test authenticates.
CANARY_TOKEN = "canary-token"

#: Test limits: no pings (nothing idles long enough), quick shutdown.
ABUSE_LIMITS = ServerLimits(ping_interval=None, shutdown_timeout=3.0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_op(
    node: str,
    seq: int,
    *,
    collection: str = "todos",
    record_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    op_type: str = "insert",
    wall_time: int | None = None,
    previous_data: Mapping[str, Any] | None = None,
    causal_deps: Sequence[str] = (),
) -> Operation:
    """A valid operation (its id is its content hash)."""
    return create_operation(
        type=op_type,
        node_id=node,
        collection=collection,
        record_id=record_id or uuid7(),
        data=data if data is not None or op_type == "delete" else {"title": f"op-{seq}"},
        previous_data=previous_data,
        timestamp=HLCTimestamp(wall_time if wall_time is not None else now_ms(), 0, node),
        sequence_number=seq,
        causal_deps=list(causal_deps),
    )


def handshake(
    node: str,
    *,
    token: str | None = None,
    scope: Mapping[str, Any] | None = None,
    last_delivery_sequence: int | None = 0,
    version_vector: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ("json",),
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "handshake",
        "messageId": f"msg-{uuid7()}",
        "nodeId": node,
        "versionVector": dict(version_vector or {}),
        "schemaVersion": 1,
        "supportedWireFormats": list(formats),
    }
    if token is not None:
        frame["authToken"] = token
    if scope is not None:
        frame["syncScope"] = dict(scope)
    if last_delivery_sequence is not None:
        frame["lastDeliverySequence"] = last_delivery_sequence
    return frame


def batch(ops: Iterable[Operation | Mapping[str, Any]], message_id: str | None = None) -> str:
    wires = [operation_to_wire(op) if isinstance(op, Operation) else dict(op) for op in ops]
    return json_stringify(
        {
            "type": "operation-batch",
            "messageId": message_id or f"msg-{uuid7()}",
            "operations": wires,
            "isFinal": True,
            "batchIndex": 0,
        }
    )


class RawClient:
    """A raw JSON WebSocket client: frames out, decoded dicts in."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, frame: str | bytes | Mapping[str, Any]) -> None:
        if isinstance(frame, Mapping):
            frame = json_stringify(dict(frame))
        with trio.fail_after(WAIT):
            await self.ws.send_message(frame)

    async def receive(self, within: float = WAIT) -> dict[str, Any]:
        with trio.fail_after(within):
            message = await self.ws.get_message()
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    async def receive_until(self, kind: str, within: float = WAIT) -> list[dict[str, Any]]:
        """Every message up to and including the first of type ``kind``."""
        received = []
        while True:
            message = await self.receive(within)
            received.append(message)
            if message["type"] == kind:
                return received

    async def connect(self, node: str, **kwargs: Any) -> dict[str, Any]:
        """Handshake, read the initial stream to its final batch; the response."""
        await self.send(handshake(node, **kwargs))
        response = await self.receive()
        assert response["type"] == "handshake-response", response
        if response["accepted"]:
            while True:
                message = await self.receive()
                if message["type"] == "operation-batch" and message["isFinal"]:
                    break
        return response

    async def write(
        self, ops: Sequence[Operation | Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Send one batch; its ``operation-rejected`` messages and its acknowledgment.

        Delivery batches that arrive meanwhile are ignored.
        """
        await self.send(batch(ops))
        rejected = []
        while True:
            message = await self.receive()
            if message["type"] == "operation-rejected":
                rejected.append(message)
            elif message["type"] == "acknowledgment":
                return rejected, message
            elif message["type"] == "error":
                raise AssertionError(f"unexpected error: {message}")

    async def expect_error_and_close(self) -> tuple[dict[str, Any] | None, int]:
        """Read to the close; the last ``error`` message (if any) and the close code."""
        error = None
        with trio.fail_after(WAIT):
            while True:
                try:
                    message = json.loads(await self.ws.get_message())
                except ConnectionClosed as closed:
                    return error, int(closed.reason.code)
                if message.get("type") == "error":
                    error = message

    async def still_open(self) -> None:
        """The connection is open and the session answers (an empty batch is acknowledged)."""
        _, ack = await self.write([])
        assert ack["lastSequenceNumber"] == 0


@asynccontextmanager
async def raw_client(url: str, **kwargs: Any) -> AsyncIterator[RawClient]:
    async with open_websocket_url(
        url, connect_timeout=WAIT, disconnect_timeout=WAIT, **kwargs
    ) as ws:
        yield RawClient(ws)


@attrs.frozen
class StoreSnapshot:
    """What the server store holds: op ids (in delivery order), version vector, records."""

    operation_ids: tuple[str, ...]
    version_vector: Mapping[str, int]
    records: Mapping[tuple[str, str], str]

    @property
    def digest(self) -> str:
        return hashlib.sha256(
            canonical_json(
                {
                    "ops": list(self.operation_ids),
                    "vv": dict(self.version_vector),
                    "records": sorted([*key, value] for key, value in self.records.items()),
                }
            ).encode()
        ).hexdigest()


class CanaryAuth:
    """Lets the canaries in (unscoped) whatever the provider under test decides."""

    def __init__(self, inner: AuthProvider) -> None:
        self._inner = inner

    async def authenticate(self, token: str) -> AuthContext | None:
        if token == CANARY_TOKEN:
            return AuthContext(user_id="canary", scopes=None)
        return await self._inner.authenticate(token)


class AbuseEnv:
    """A running server with a canary subscriber (see the module docstring)."""

    def __init__(self, server: SyncServer, store: ServerStore, token: str | None) -> None:
        self.server = server
        self.store = store
        self.canary_token = token
        self.seen: list[str] = []
        self._seen_changed = trio.Event()
        self._canary_seq = 0
        self.canary_ids: set[str] = set()

    @property
    def url(self) -> str:
        return self.server.url

    async def subscribe(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with raw_client(self.url) as client:
            await client.send(handshake("canary-subscriber", token=self.canary_token))
            started = False
            while True:
                try:
                    message = json.loads(await client.ws.get_message())
                except ConnectionClosed as closed:
                    # Only the end of the environment may close the canary.
                    raise AssertionError(f"the canary subscriber was cut: {closed}") from None
                if message["type"] != "operation-batch":
                    continue
                self.seen.extend(op["id"] for op in message["operations"])
                self._seen_changed.set()
                self._seen_changed = trio.Event()
                if message.get("maxDeliverySequence") is not None:
                    await client.send(
                        {
                            "type": "acknowledgment",
                            "messageId": f"msg-{uuid7()}",
                            "acknowledgedMessageId": message["messageId"],
                            "lastSequenceNumber": 0,
                            "deliverySequence": message["maxDeliverySequence"],
                        }
                    )
                if message["isFinal"] and not started:
                    started = True
                    task_status.started()

    async def wait_seen(self, op_id: str) -> None:
        with trio.fail_after(WAIT):
            while op_id not in self.seen:
                await self._seen_changed.wait()

    async def snapshot(self, extra_records: Iterable[tuple[str, str]] = ()) -> StoreSnapshot:
        """The store's content (the canary collection left out)."""
        delivered = await self.store.operations_after_delivery(0, 1_000_000)
        ops = [d.operation for d in delivered if d.operation.collection != "canary"]
        keys = {(op.collection, op.record_id) for op in ops} | set(extra_records)
        records = {}
        for collection, record_id in sorted(keys):
            record = await self.store.find_record(collection, record_id)
            records[(collection, record_id)] = (
                "absent"
                if record is None
                else canonical_json({"fields": dict(record.fields), "deleted": record.deleted})
            )
        vector = {}
        for op in ops:
            vector[op.node_id] = max(vector.get(op.node_id, 0), op.sequence_number)
        stored_vector = (await self.store.version_vector()).to_wire()
        for node, seq in stored_vector.items():
            if node.startswith("canary"):
                continue
            vector[node] = max(vector.get(node, 0), seq)
        return StoreSnapshot(tuple(op.id for op in ops), vector, records)

    async def assert_only_applied(
        self, before: StoreSnapshot, applied: Sequence[Operation] = ()
    ) -> StoreSnapshot:
        """The store holds what it held before plus exactly ``applied`` (in that order)."""
        after = await self.snapshot(extra_records=before.records)
        expected_ids = before.operation_ids + tuple(op.id for op in applied)
        assert after.operation_ids == expected_ids, "the store changed beyond the row's ops"
        if not applied:
            assert after.digest == before.digest
        return after

    async def assert_healthy(self, rejected: Iterable[str] = ()) -> None:
        """Canary writer: write + ack on a new connection; canary subscriber got it, and
        none of ``rejected``."""
        self._canary_seq += 1
        op = make_op("canary-writer", self._canary_seq, collection="canary")
        async with raw_client(self.url) as writer:
            response = await writer.connect("canary-writer", token=self.canary_token)
            assert response["accepted"] is True
            rejections, ack = await writer.write([op])
            assert rejections == []
            assert ack["lastSequenceNumber"] == self._canary_seq
        self.canary_ids.add(op.id)
        await self.wait_seen(op.id)
        leaked = set(rejected) & set(self.seen)
        assert not leaked, f"the canary subscriber received rejected operations {leaked}"

    def seen_count(self, op_id: str) -> int:
        return self.seen.count(op_id)


@asynccontextmanager
async def abuse_env(
    *,
    store: ServerStore | None = None,
    auth: AuthProvider | None = None,
    limits: ServerLimits = ABUSE_LIMITS,
    **server_kwargs: Any,
) -> AsyncIterator[AbuseEnv]:
    """A server (memory store unless given) plus a subscribed canary."""
    async with MemoryServerStore() as memory:
        used = store if store is not None else memory
        async with open_server(
            store=used,
            host="127.0.0.1",
            port=0,
            auth=CanaryAuth(auth) if auth is not None else None,
            limits=limits,
            **server_kwargs,
        ) as server:
            env = AbuseEnv(server, used, CANARY_TOKEN if auth is not None else None)
            async with trio.open_nursery() as nursery:
                await nursery.start(env.subscribe)
                yield env
                nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- byte-level WebSocket


def ws_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    mask_key: bytes = b"\x11\x22\x33\x44",
) -> bytes:
    """One RFC 6455 frame, built by hand so it can break the rules (no mask, RSV bits)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if length < 126:
        header = bytes([first, (0x80 if mask else 0) | length])
    elif length < 1 << 16:
        header = bytes([first, (0x80 if mask else 0) | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([first, (0x80 if mask else 0) | 127]) + length.to_bytes(8, "big")
    if not mask:
        return header + payload
    masked = bytes(b ^ mask_key[i % 4] for i, b in enumerate(payload))
    return header + mask_key + masked


def upgrade_request(
    port: int,
    *,
    key: str | None = "dGhlIHNhbXBsZSBub25jZQ==",
    version: str | None = "13",
    extra: Sequence[str] = (),
) -> bytes:
    lines = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawSocket:
    """A TCP connection that speaks WebSocket bytes directly (for malformed frames)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def read_response_head(self) -> tuple[int, bytes]:
        """Status code and head of the HTTP response (the upgrade answer or a refusal)."""
        with trio.fail_after(WAIT):
            while b"\r\n\r\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    break
                self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head else 0
        return status, head

    async def upgrade(self, port: int, extra: Sequence[str] = ()) -> bytes:
        await self.stream.send_all(upgrade_request(port, extra=extra))
        status, head = await self.read_response_head()
        assert status == 101, head
        return head

    async def send(self, data: bytes) -> None:
        with trio.fail_after(WAIT):
            await self.stream.send_all(data)

    async def read_frame(self) -> tuple[int, bytes] | None:
        """The next server frame (opcode, payload); ``None`` at EOF."""
        with trio.fail_after(WAIT):
            while True:
                parsed = _parse_frame(self.buffer)
                if parsed is not None:
                    opcode, payload, used = parsed
                    self.buffer = self.buffer[used:]
                    return opcode, payload
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    return None
                self.buffer += chunk

    async def close_code(self) -> int | None:
        """Read frames until a close frame (its code) or EOF (``None``)."""
        while True:
            frame = await self.read_frame()
            if frame is None:
                return None
            opcode, payload = frame
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


def _parse_frame(data: bytes) -> tuple[int, bytes, int] | None:
    if len(data) < 2:
        return None
    opcode = data[0] & 0x0F
    length = data[1] & 0x7F
    offset = 2
    if length == 126:
        if len(data) < 4:
            return None
        length = int.from_bytes(data[2:4], "big")
        offset = 4
    elif length == 127:
        if len(data) < 10:
            return None
        length = int.from_bytes(data[2:10], "big")
        offset = 10
    if len(data) < offset + length:
        return None
    return opcode, data[offset : offset + length], offset + length


@asynccontextmanager
async def raw_socket(port: int) -> AsyncIterator[RawSocket]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        yield RawSocket(stream)
