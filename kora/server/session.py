"""One client session: handshake, delivery stream, ingest, live streaming (spec 4, 8.2-8.4).

Theory of operation
-------------------

A session runs over any ``FrameTransport`` (WebSocket or long-poll) in three phases.

1. **Handshake.**  The first frame must be a ``handshake`` and must arrive within
   ``handshake_timeout``; anything else gets an ``error`` and the connection is closed.  The
   token goes to the auth provider (``None`` -> ``AUTH_FAILED``, close 4401).  The scope is
   resolved so the client can only narrow what auth grants.  If the client's ``syncScope``
   differs from the resolved scope, its watermark belongs to another view of the data: the
   stream restarts from 0 *and* the response carries ``serverMaxDeliverySequence: 0`` so that
   a reference client (which resets when that value is below its watermark) resets too,
   instead of treating every batch as a duplicate (the spec 4.4 hazard).  A schema version
   outside the supported range is answered with ``accepted: false`` and
   ``SCHEMA_MISMATCH: ...``, then the connection closes.

2. **Initial stream.**  The delivery stream from the client's watermark (or the legacy
   version-vector delta for clients that send no ``lastDeliverySequence``), always ending
   with a final batch, so the client reaches ``streaming``.

3. **Streaming.**  Two tasks share a lock, so that messages are handled strictly one at a
   time as the reference does: the *reader* handles client frames (batches, acks), the
   *pusher* waits for hub wake-ups and sends what was committed since the session's *sent*
   position, chaining ``base`` from batch to batch.  Nothing is buffered per session: every
   push re-reads the store by delivery sequence.  If acknowledgments stall behind what was
   sent for ``redelivery_interval`` (the client dropped or could not apply a batch), the sent
   position rewinds to the acknowledged one and the stream is sent again; a client ignores
   what it already has, so this costs bandwidth, never correctness.

Ingest of a client batch is all-or-nothing per operation and one transaction per batch: each
operation is checked (content id, clock bounds, size, schema), the survivors are appended in
one ``append_batch`` whose ``admit`` applies the scope-on-write check against the current
record, refusals are answered with ``operation-rejected`` (stable codes, never a per-op
``error``), and then exactly one acknowledgment follows.  A batch over the rate limit is
refused whole with ``error RATE_LIMIT`` (retriable) and a close, before anything is stored,
so the client resends it later and loses nothing (``operation-rejected`` would make a
reference client drop the operations for good).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from kora.core.errors import KoraError
from kora.core.hlc import check_ingest_bounds
from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.merge import RecordState
from kora.protocol.errors import InvalidOperationError, RemoteProtocolError
from kora.protocol.messages import (
    Acknowledgment,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    Message,
    OperationBatch,
    OperationRejected,
)
from kora.server.auth import AuthContext
from kora.server.context import ServerContext
from kora.server.delivery import delivery_stream, legacy_delta
from kora.server.hub import Subscription
from kora.server.logs import fields, get_logger
from kora.server.scopes import (
    Scope,
    operation_visible,
    resolve_scopes,
    scope_differs,
    write_allowed,
)
from kora.server.stores.base import AppendStatus
from kora.server.transport import CloseCode, FrameTransport, TransportClosed
from kora.server.wire import MalformedOperation, SalvagedBatch, WireCodec

__all__ = ["RejectionCode", "SessionClosed", "SyncSession", "refuse_connection"]

log = get_logger(__name__)

#: Legacy relay batches remembered for acknowledgment bookkeeping.
MAX_TRACKED_LEGACY_BATCHES: Final = 1000


class RejectionCode:
    """Stable codes of ``operation-rejected`` (all permanent: ``retriable: false``)."""

    INVALID_OPERATION: Final = "INVALID_OPERATION"
    INVALID_ID: Final = "INVALID_ID"
    INVALID_TIMESTAMP: Final = "INVALID_TIMESTAMP"
    OPERATION_TOO_LARGE: Final = "OPERATION_TOO_LARGE"
    SCHEMA_VALIDATION: Final = "SCHEMA_VALIDATION"
    SCOPE_VIOLATION: Final = "SCOPE_VIOLATION"


class ErrorCode:
    """Stable codes of the ``error`` messages the server sends (each followed by a close,
    except ``DUPLICATE_HANDSHAKE``)."""

    AUTH_FAILED: Final = "AUTH_FAILED"
    HANDSHAKE_REQUIRED: Final = "HANDSHAKE_REQUIRED"
    HANDSHAKE_TIMEOUT: Final = "HANDSHAKE_TIMEOUT"
    DUPLICATE_HANDSHAKE: Final = "DUPLICATE_HANDSHAKE"
    RATE_LIMIT: Final = "RATE_LIMIT"
    BATCH_TOO_LARGE: Final = "BATCH_TOO_LARGE"
    MAX_CONNECTIONS: Final = "MAX_CONNECTIONS"
    SYNC_ERROR: Final = "SYNC_ERROR"


class SessionClosed(KoraError):
    """Raised inside a session to end it: send ``error`` (if any), then close."""

    def __init__(
        self,
        close_code: int,
        reason: str,
        *,
        error: tuple[str, str, bool] | None = None,
    ) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.error = error


@attrs.frozen
class _Refusal:
    index: int
    operation_id: str
    collection: str
    record_id: str
    code: str
    message: str

    @classmethod
    def of(cls, index: int, op: Operation, code: str, message: str) -> _Refusal:
        return cls(index, op.id, op.collection, op.record_id, code, message)


async def refuse_connection(
    ctx: ServerContext,
    transport: FrameTransport,
    *,
    code: str,
    message: str,
    retriable: bool,
    close_code: int,
) -> None:
    """Send one ``error`` and close (used before a session starts, e.g. max connections)."""
    codec = WireCodec(ctx.limits)
    ctx.metrics.errors.inc(1, code)
    frame = codec.encode(
        ErrorMessage(message_id=uuid7(), code=code, message=message, retriable=retriable)
    )
    try:
        await transport.send(frame)
    except TransportClosed:
        pass
    await transport.close(close_code, message)


def _first_closed(group: BaseExceptionGroup[SessionClosed]) -> SessionClosed:
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    assert isinstance(found, SessionClosed)
    return found


class SyncSession:
    """The server side of one client connection (see the module docstring)."""

    def __init__(
        self,
        ctx: ServerContext,
        transport: FrameTransport,
        *,
        session_id: str,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._ctx = ctx
        self._transport = transport
        self.session_id = session_id
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._codec = WireCodec(ctx.limits)
        self._lock = trio.Lock()
        self.client_node: str | None = None
        self.auth: AuthContext | None = None
        self.scopes: Scope | None = None
        self.watermark_mode = True
        self.sent_position = 0
        self.acked_position = 0
        self._last_ack_progress = 0.0
        self._legacy_batches: OrderedDict[str, int] = OrderedDict()
        self._rate_key = ""
        self.streaming = False

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the client until it leaves, a fatal error, or server shutdown."""
        metrics = self._ctx.metrics
        metrics.sessions.inc(1, self._transport.name)
        metrics.sessions_opened.inc(1, self._transport.name)
        try:
            with self._ctx.hub.subscribe() as subscription:
                try:
                    await self._handshake_phase()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reader, nursery.cancel_scope)
                        nursery.start_soon(self._pusher, subscription)
                        nursery.start_soon(self._shutdown_watch, nursery.cancel_scope)
                except* SessionClosed as group:
                    # Several tasks can end the session at once; the first reason is sent.
                    await self._close(_first_closed(group))
                except* TransportClosed:
                    pass
        finally:
            metrics.sessions.dec(1, self._transport.name)
            log.debug("session ended", extra=fields(session=self.session_id))

    async def _close(self, closed: SessionClosed) -> None:
        if closed.error is not None:
            code, message, retriable = closed.error
            await self._send_error(code, message, retriable)
        log.info(
            "session closed",
            extra=fields(
                session=self.session_id,
                node=self.client_node,
                code=closed.close_code,
                reason=closed.reason,
            ),
        )
        await self._transport.close(closed.close_code, closed.reason)

    async def _shutdown_watch(self, cancel_scope: trio.CancelScope) -> None:
        await self._ctx.shutdown.wait()
        async with self._lock:  # let the batch in progress finish and be acknowledged
            await self._close(SessionClosed(CloseCode.GOING_AWAY, "server shutting down"))
        cancel_scope.cancel()

    # ------------------------------------------------------------ sending

    async def _send(self, message: Message) -> None:
        frame = self._codec.encode(message)
        await self._transport.send(frame)
        self._ctx.metrics.bytes_sent.inc(len(frame), self._transport.name)

    async def _send_error(self, code: str, message: str, retriable: bool) -> None:
        self._ctx.metrics.errors.inc(1, code)
        try:
            await self._send(
                ErrorMessage(message_id=uuid7(), code=code, message=message, retriable=retriable)
            )
        except TransportClosed:
            pass

    # ------------------------------------------------------------ receiving

    async def _receive(self) -> Message | SalvagedBatch | None:
        """The next decoded message, ``None`` for a dropped (non-fatal) bad frame.

        A batch with malformed operations comes back as a ``SalvagedBatch`` (once the
        handshake is done) so those operations are refused one by one.
        """
        frame = await self._transport.receive()
        self._ctx.metrics.bytes_received.inc(len(frame), self._transport.name)
        try:
            return self._codec.decode(frame)
        except RemoteProtocolError as exc:
            if isinstance(exc, InvalidOperationError) and self.streaming:
                salvaged = self._codec.salvage_batch(frame)
                if salvaged is not None:
                    return salvaged
            if not exc.fatal:
                log.info(
                    "dropped a malformed frame",
                    extra=fields(session=self.session_id, code=exc.code, error=str(exc)),
                )
                return None
            close_code = (
                CloseCode.INVALID_PAYLOAD
                if exc.code in ("INVALID_JSON", "INVALID_STRING", "INVALID_NUMBER")
                else CloseCode.POLICY_VIOLATION
            )
            raise SessionClosed(close_code, exc.code, error=(exc.code, str(exc), False)) from exc

    # ------------------------------------------------------------ handshake

    async def _handshake_phase(self) -> None:
        limits = self._ctx.limits
        with trio.move_on_after(limits.handshake_timeout) as timer:
            message: Message | SalvagedBatch | None = None
            while message is None:
                message = await self._receive()
            if not isinstance(message, Handshake):
                kind = message.TYPE if not isinstance(message, SalvagedBatch) else "batch"
                raise SessionClosed(
                    CloseCode.POLICY_VIOLATION,
                    "handshake required",
                    error=(
                        ErrorCode.HANDSHAKE_REQUIRED,
                        f"expected a handshake, got {kind}",
                        False,
                    ),
                )
            await self._authenticate(message)
        if timer.cancelled_caught:
            raise SessionClosed(
                CloseCode.UNAUTHENTICATED,
                "handshake timeout",
                error=(ErrorCode.HANDSHAKE_TIMEOUT, "no handshake within the time limit", True),
            )
        assert isinstance(message, Handshake)
        async with self._lock:
            await self._accept(message)

    async def _authenticate(self, hello: Handshake) -> None:
        self.client_node = hello.node_id
        provider = self._ctx.auth
        if provider is None:
            self.auth = None
        else:
            try:
                self.auth = await provider.authenticate(hello.auth_token or "")
            except Exception as exc:
                log.exception("auth provider failed", extra=fields(session=self.session_id))
                raise SessionClosed(
                    CloseCode.INTERNAL_ERROR,
                    "auth provider failed",
                    error=(ErrorCode.SYNC_ERROR, "authentication is unavailable", True),
                ) from exc
            if self.auth is None:
                log.info(
                    "authentication failed",
                    extra=fields(session=self.session_id, node=hello.node_id),
                )
                raise SessionClosed(
                    CloseCode.UNAUTHENTICATED,
                    "authentication failed",
                    error=(ErrorCode.AUTH_FAILED, "Authentication failed", False),
                )
        granted = self.auth.scopes if self.auth is not None else None
        self.scopes = resolve_scopes(hello.sync_scope, granted)
        anonymous = (
            self.auth is None
            or self.auth.user_id == "anonymous"
            or bool(self.auth.metadata.get("anonymous"))
        )
        self._rate_key = f"node:{hello.node_id}" if anonymous else f"user:{self.auth.user_id}"  # type: ignore[union-attr]

    async def _accept(self, hello: Handshake) -> None:
        ctx = self._ctx
        store = ctx.store
        low, high = ctx.schema_range
        server_time = self._clock_ms()
        with ctx.metrics.store_latency.time("version_vector"):
            vector = await store.version_vector()
        if not low <= hello.schema_version <= high:
            await self._send(
                HandshakeResponse(
                    message_id=uuid7(),
                    node_id=store.node_id,
                    version_vector=vector.to_wire(),
                    schema_version=high,
                    accepted=False,
                    reject_reason=(
                        f"SCHEMA_MISMATCH: client schema version {hello.schema_version} "
                        f"not in supported range [{low}, {high}]"
                    ),
                    supported_schema_min=low,
                    supported_schema_max=high,
                    server_time=server_time,
                )
            )
            raise SessionClosed(CloseCode.NORMAL, "schema version mismatch")

        watermark = hello.last_delivery_sequence
        reported_max: int | None = None
        if watermark is not None:
            with ctx.metrics.store_latency.time("max_delivery_sequence"):
                server_max = await store.max_delivery_sequence()
            reported_max = server_max
            if scope_differs(hello.sync_scope, self.scopes):
                # Tell the client, so it resets its watermark as we do (spec 4.4 hazard).
                watermark, reported_max = 0, 0
            elif watermark > server_max:
                watermark = 0
        selected_format = self._codec.negotiate(hello.supported_wire_formats)
        await self._send(
            HandshakeResponse(
                message_id=uuid7(),
                node_id=store.node_id,
                version_vector=vector.to_wire(),
                schema_version=high,
                accepted=True,
                selected_wire_format=selected_format,
                server_time=server_time,
                server_max_delivery_sequence=reported_max,
                accepted_scope=self.scopes,
            )
        )
        self._codec.select(selected_format)
        log.info(
            "session accepted",
            extra=fields(
                session=self.session_id,
                node=hello.node_id,
                user=self.auth.user_id if self.auth else None,
                transport=self._transport.name,
                watermark=watermark,
                format=selected_format,
            ),
        )
        self._last_ack_progress = trio.current_time()
        if watermark is not None:
            self.watermark_mode = True
            self.sent_position = self.acked_position = watermark
            await self._push_delivery(
                exclude_node=hello.node_id if watermark > 0 else None, finalize=True
            )
        else:
            self.watermark_mode = False
            with ctx.metrics.store_latency.time("max_delivery_sequence"):
                start = await store.max_delivery_sequence()
            client_vector = VersionVector.from_wire(hello.version_vector)
            with ctx.metrics.store_latency.time("legacy_delta"):
                batches = await legacy_delta(
                    store,
                    client_vector=client_vector,
                    batch_size=ctx.batch_size,
                    visible=self._visible,
                    delta_cursor=hello.delta_cursor,
                )
            for batch in batches:
                await self._send(
                    OperationBatch(
                        message_id=uuid7(),
                        operations=batch.operations,
                        is_final=batch.is_final,
                        batch_index=batch.batch_index,
                        total_batches=batch.total_batches,
                        cursor=batch.cursor,
                    )
                )
                ctx.metrics.operations_sent.inc(len(batch.operations))
            # Live relays start at the store's end as of the handshake; anything committed
            # while the delta was computed may arrive twice, which clients dedup by id.
            self.sent_position = self.acked_position = start
        self.streaming = True

    # ------------------------------------------------------------ delivery

    async def _visible(self, op: Operation) -> bool:
        scopes = self.scopes
        if scopes is None:
            return True
        required = scopes.get(op.collection)
        if required is None:
            return False
        carried = {**(op.previous_data or {}), **(op.data or {})}
        record_fields = None
        if any(field not in carried for field in required):
            with self._ctx.metrics.store_latency.time("find_record"):
                record = await self._ctx.store.find_record(op.collection, op.record_id)
            record_fields = record.fields if record is not None else None
        return operation_visible(op, scopes, record_fields)

    async def _push_delivery(self, *, exclude_node: str | None, finalize: bool) -> None:
        """Send what was committed after the sent position (caller holds the lock)."""
        ctx = self._ctx
        stream = delivery_stream(
            ctx.store,
            after=self.sent_position,
            batch_size=ctx.batch_size,
            visible=self._visible,
            exclude_node=exclude_node,
            finalize_when_empty=finalize,
        )
        async for batch in stream:
            if self.watermark_mode:
                message = OperationBatch(
                    message_id=uuid7(),
                    operations=batch.operations,
                    is_final=batch.is_final,
                    batch_index=batch.batch_index,
                    base_delivery_sequence=batch.base,
                    max_delivery_sequence=batch.max,
                )
            else:
                if not batch.operations:
                    self.sent_position = self.acked_position = max(self.acked_position, batch.max)
                    continue
                message = OperationBatch(
                    message_id=uuid7(),
                    operations=batch.operations,
                    is_final=True,
                    batch_index=0,
                )
                self._legacy_batches[message.message_id] = batch.max
                while len(self._legacy_batches) > MAX_TRACKED_LEGACY_BATCHES:
                    self._legacy_batches.popitem(last=False)
            await self._send(message)
            self.sent_position = batch.max
            ctx.metrics.operations_sent.inc(len(batch.operations))

    async def _pusher(self, subscription: Subscription) -> None:
        interval = self._ctx.limits.redelivery_interval
        while True:
            with trio.move_on_after(interval):
                await subscription.wait()
            async with self._lock:
                now = trio.current_time()
                if (
                    self.acked_position < self.sent_position
                    and now - self._last_ack_progress >= interval
                ):
                    log.debug(
                        "acknowledgments stalled; re-sending from the acknowledged position",
                        extra=fields(
                            session=self.session_id,
                            acked=self.acked_position,
                            sent=self.sent_position,
                        ),
                    )
                    self.sent_position = self.acked_position
                    self._last_ack_progress = now
                await self._push_delivery(exclude_node=self.client_node, finalize=False)

    # ------------------------------------------------------------ the reader

    async def _reader(self, cancel_scope: trio.CancelScope) -> None:
        try:
            while True:
                message = await self._receive()
                if message is None:
                    continue
                async with self._lock:
                    await self._dispatch(message)
        except TransportClosed:
            cancel_scope.cancel()

    async def _dispatch(self, message: Message | SalvagedBatch) -> None:
        if isinstance(message, SalvagedBatch):
            await self._ingest(
                message.batch,
                malformed=message.malformed,
                positions=message.positions,
                last_sequence_number=message.last_sequence_number,
            )
        elif isinstance(message, OperationBatch):
            await self._ingest(message)
        elif isinstance(message, Acknowledgment):
            self._on_acknowledgment(message)
        elif isinstance(message, Handshake):
            await self._send_error(
                ErrorCode.DUPLICATE_HANDSHAKE, "the session already completed its handshake", False
            )
        else:
            # error from a client, side channels (awareness, yjs, blobs): accepted, not relayed.
            log.debug(
                "ignored a message",
                extra=fields(session=self.session_id, type=type(message).TYPE),
            )

    def _on_acknowledgment(self, ack: Acknowledgment) -> None:
        position: int | None
        if self.watermark_mode:
            position = ack.delivery_sequence
        else:
            position = self._legacy_batches.pop(ack.acknowledged_message_id, None)
        if position is None:
            return
        position = min(position, self.sent_position)  # a client cannot ack what it never got
        if position > self.acked_position:
            self.acked_position = position
            self._last_ack_progress = trio.current_time()

    # ------------------------------------------------------------ ingest

    async def _ingest(
        self,
        batch: OperationBatch,
        *,
        malformed: Sequence[MalformedOperation] = (),
        positions: Sequence[int] | None = None,
        last_sequence_number: int | None = None,
    ) -> None:
        ctx = self._ctx
        ops = batch.operations
        ctx.metrics.operations_received.inc(len(ops) + len(malformed))
        if len(ops) > ctx.limits.max_batch_operations:
            raise SessionClosed(
                CloseCode.MESSAGE_TOO_BIG,
                "batch too large",
                error=(
                    ErrorCode.BATCH_TOO_LARGE,
                    f"a batch may hold at most {ctx.limits.max_batch_operations} operations",
                    False,
                ),
            )
        retry_after = ctx.rate_limiter.try_acquire(self._rate_key, len(ops))
        if retry_after:
            raise SessionClosed(
                CloseCode.RATE_LIMITED,
                "rate limit",
                error=(
                    ErrorCode.RATE_LIMIT,
                    f"operation rate limit exceeded ({ctx.limits.ops_per_minute} ops/min); "
                    f"retry in {math.ceil(retry_after)} s",
                    True,
                ),
            )
        now_ms = self._clock_ms()
        refusals = [
            _Refusal(
                bad.index,
                bad.operation_id,
                bad.collection,
                bad.record_id,
                RejectionCode.INVALID_OPERATION,
                f'Operation "{bad.operation_id}" is malformed: {bad.reason}',
            )
            for bad in malformed
        ]
        candidates: list[tuple[int, Operation]] = []
        for position, op in enumerate(ops):
            index = positions[position] if positions is not None else position
            problem = self._check_operation(op, now_ms)
            if problem is None:
                candidates.append((index, op))
            else:
                refusals.append(_Refusal.of(index, op, *problem))
        if candidates:
            scopes = self.scopes

            def admit(op: Operation, record: RecordState | None) -> bool:
                return write_allowed(op, scopes, record.fields if record is not None else None)

            try:
                with ctx.metrics.store_latency.time("append_batch"):
                    result = await ctx.store.append_batch(
                        [op for _, op in candidates], admit=admit if scopes is not None else None
                    )
            except KoraError as exc:
                log.exception("append failed", extra=fields(session=self.session_id))
                raise SessionClosed(
                    CloseCode.INTERNAL_ERROR,
                    "store failure",
                    error=(ErrorCode.SYNC_ERROR, "the server could not store the batch", True),
                ) from exc
            applied = 0
            for (index, op), outcome in zip(candidates, result.outcomes, strict=True):
                if outcome.status is AppendStatus.REJECTED:
                    refusals.append(
                        _Refusal.of(
                            index,
                            op,
                            RejectionCode.SCOPE_VIOLATION,
                            f'Operation "{op.id}" in collection "{op.collection}" is outside '
                            "the client's sync scope",
                        )
                    )
                elif outcome.status is AppendStatus.INVALID:
                    refusals.append(
                        _Refusal.of(
                            index,
                            op,
                            RejectionCode.INVALID_OPERATION,
                            f'Operation "{op.id}" cannot be applied to its record',
                        )
                    )
                elif outcome.status is AppendStatus.APPLIED:
                    applied += 1
            ctx.metrics.operations_applied.inc(applied)
            if applied:
                ctx.hub.publish(result.max_delivery_sequence)
        for refusal in sorted(refusals, key=lambda r: r.index):
            ctx.metrics.rejections.inc(1, refusal.code)
            await self._send(
                OperationRejected(
                    message_id=uuid7(),
                    operation_id=refusal.operation_id,
                    collection=refusal.collection,
                    record_id=refusal.record_id,
                    code=refusal.code,
                    message=refusal.message,
                    retriable=False,
                )
            )
        await self._send(
            Acknowledgment(
                message_id=uuid7(),
                acknowledged_message_id=batch.message_id,
                last_sequence_number=(
                    batch.last_sequence_number
                    if last_sequence_number is None
                    else last_sequence_number
                ),
            )
        )

    def _check_operation(self, op: Operation, now_ms: int) -> tuple[str, str] | None:
        """``(code, message)`` if ``op`` must be refused before it reaches the store."""
        limits = self._ctx.limits
        size = self._codec.operation_size(op)
        if size > limits.max_operation_bytes:
            return (
                RejectionCode.OPERATION_TOO_LARGE,
                f'Operation "{op.id}" exceeds max size ({size} > {limits.max_operation_bytes} bytes)',
            )
        if not op.verify_id():
            return (
                RejectionCode.INVALID_ID,
                f'Operation "{op.id}" does not match the content hash of its fields',
            )
        try:
            check_ingest_bounds(op.timestamp, now_ms, limits.max_future_ms, operation_id=op.id)
        except ValueError as exc:
            return RejectionCode.INVALID_TIMESTAMP, str(exc)
        schema = self._ctx.schema
        if schema is not None:
            try:
                schema.validate_operation(op)
            except ValueError as exc:
                return RejectionCode.SCHEMA_VALIDATION, f'Operation "{op.id}": {exc}'
        return None
