"""One client session: handshake, delivery stream, ingest, live streaming (spec 4, 8.2-8.4).

Theory of operation
-------------------

The protocol itself (what may come when, the handshake-response, the format switch, the
chaining of delivery batches, the one acknowledgment per client batch, what an
acknowledgment confirms) is ``kora.protocol.ServerSession``'s.  This module does the I/O and
the policy around it: it reads frames from any ``FrameTransport`` (WebSocket or long-poll),
feeds them to the state machine, answers its actions with the store, auth and the hub, and
sends the frames it produces.  Three phases:

1. **Handshake.**  The first frame must be a ``handshake`` and must arrive within
   ``handshake_timeout``; anything else is a fatal protocol error, answered with an ``error``
   and a close.  The token goes to the auth provider (``None`` -> ``AUTH_FAILED``, close
   4401).  The scope is resolved so the client can only narrow what auth grants.  If the
   client's ``syncScope`` differs from the resolved scope, its watermark belongs to another
   view of the data, and a watermark beyond the store's log belongs to another log: the
   stream restarts from 0, and the response says so (``serverMaxDeliverySequence`` below the
   client's watermark: 0 for a scope change, the store's maximum for a watermark beyond it).
   A reference client resets when that value is below its watermark, instead of treating
   every batch as a duplicate (the spec 4.4 hazard).  A schema version outside the
   supported range is answered with ``accepted: false`` and ``SCHEMA_MISMATCH: ...``, then
   the connection closes.

2. **Initial stream.**  The delivery stream from the client's watermark (or the legacy
   version-vector delta for clients that send no ``lastDeliverySequence``), always ending
   with a final batch, so the client reaches ``streaming``.

3. **Streaming.**  Two tasks share a lock, so that messages are handled strictly one at a
   time as the reference does: the *reader* handles client frames (batches, acks), the
   *pusher* waits for hub wake-ups and sends what was committed since the session's *sent*
   position (``ServerSession.sent_through``).  Nothing is buffered per session: every push
   reads on by delivery sequence, from the hub's window of recent commits when the session
   is caught up to it (the common case), from the store otherwise.  If acknowledgments stall behind what was sent
   for ``redelivery_interval`` (the client dropped or could not apply a batch), the session
   rewinds to the confirmed position and sends the stream again; a client ignores what it
   already has, so this costs bandwidth, never correctness.

Ingest of a client batch is all-or-nothing per operation and one transaction per batch: each
operation is checked (shape, content id, clock bounds, size, schema), the survivors are
appended in one ``append_batch`` whose ``admit`` applies the scope-on-write check against the
current record, refusals are answered with ``operation-rejected`` (stable codes, never a
per-op ``error``), and then exactly one acknowledgment follows.  A batch over the rate limit
is refused whole with ``error RATE_LIMIT`` (retriable) and a close, before anything is
stored, so the client resends it later and loses nothing (``operation-rejected`` would make a
reference client drop the operations for good).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Final, NoReturn

import attrs
import trio

from kora.core.errors import KoraError
from kora.core.hlc import check_ingest_bounds
from kora.core.operation import Operation
from kora.core.version_vector import VersionVector
from kora.merge import RecordState
from kora.protocol.actions import (
    AcknowledgmentReceived,
    Action,
    HandshakeReceived,
    OperationsReceived,
    SendFrame,
)
from kora.protocol.errors import (
    DuplicateHandshakeError,
    HandshakeRequiredError,
    RemoteProtocolError,
    TooManyOperationsError,
)
from kora.protocol.malformed import MalformedOperation
from kora.protocol.messages import ErrorMessage, Handshake, OperationRejected
from kora.protocol.server import ServerSession
from kora.server.auth import AuthContext
from kora.server.context import ServerContext
from kora.server.delivery import OwnRun, delivery_stream, legacy_delta, recent_delivery
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
from kora.server.transport import CloseCode, Frame, FrameTransport, TransportClosed
from kora.server.wire import codec_limits, operation_text, text_size

__all__ = ["RejectionCode", "SessionClosed", "SyncSession", "refuse_connection"]

log = get_logger(__name__)

#: Codec codes of a frame whose bytes are not valid JSON text: close 1007, others 1008.
_INVALID_PAYLOAD_CODES: Final = frozenset({"INVALID_JSON", "INVALID_STRING", "INVALID_NUMBER"})


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
    HANDSHAKE_REQUIRED: Final = HandshakeRequiredError.code  # raised by ServerSession
    HANDSHAKE_TIMEOUT: Final = "HANDSHAKE_TIMEOUT"
    DUPLICATE_HANDSHAKE: Final = DuplicateHandshakeError.code  # raised by ServerSession
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


class _SessionLock:
    """``trio.Lock`` for ``async with``, whose uncontended acquire does not yield.

    A woken pusher goes on to its send without waiting for a scheduler round (with 200
    sessions woken at once, every round is 200 task steps).  The loops that take it
    checkpoint on every turn anyway (the wake-up, the next frame).
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()


@attrs.frozen
class _Refusal:
    index: int
    operation: Operation | MalformedOperation
    code: str
    message: str


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
    ctx.metrics.errors.inc(1, code)
    (sent,) = ServerSession().abort(code, message, retriable=retriable)
    assert isinstance(sent, SendFrame)
    try:
        await transport.send(sent.frame)
    except TransportClosed:
        pass
    await transport.close(close_code, message)


def _first_closed(group: BaseExceptionGroup[SessionClosed]) -> SessionClosed:
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    assert isinstance(found, SessionClosed)
    return found


def _fatal(exc: RemoteProtocolError) -> SessionClosed:
    """How the session ends after the client's fatal protocol error ``exc``."""
    if isinstance(exc, TooManyOperationsError):
        # The decoder enforces max_batch_operations (codec_limits); the server's code for it.
        return SessionClosed(
            CloseCode.MESSAGE_TOO_BIG,
            "batch too large",
            error=(ErrorCode.BATCH_TOO_LARGE, str(exc), False),
        )
    close_code = (
        CloseCode.INVALID_PAYLOAD
        if exc.code in _INVALID_PAYLOAD_CODES
        else CloseCode.POLICY_VIOLATION
    )
    return SessionClosed(close_code, exc.code, error=(exc.code, str(exc), False))


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
        self._protocol = ServerSession(
            limits=codec_limits(ctx.limits),
            lenient_operations=True,
            shared_encodings=ctx.encodings,
        )
        self._lock = _SessionLock()
        self.client_node: str | None = None
        self.auth: AuthContext | None = None
        self.scopes: Scope | None = None
        self._last_ack_progress = 0.0
        self._rate_key = ""
        self._own_run = OwnRun()
        self._token = ""
        #: This session's hub subscription (while it runs), skipped by its own publications.
        self._subscription: Subscription | None = None

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the client until it leaves, a fatal error, or server shutdown."""
        metrics = self._ctx.metrics
        metrics.sessions.inc(1, self._transport.name)
        metrics.sessions_opened.inc(1, self._transport.name)
        try:
            with self._ctx.hub.subscribe() as subscription:
                self._subscription = subscription
                try:
                    await self._handshake_phase()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reader, nursery.cancel_scope)
                        nursery.start_soon(self._pusher, subscription)
                        nursery.start_soon(self._watch, subscription, nursery.cancel_scope)
                        if self._token:
                            nursery.start_soon(self._revalidate)
                except* SessionClosed as group:
                    # Several tasks can end the session at once; the first reason is sent.
                    await self._close(_first_closed(group))
                except* TransportClosed:
                    pass
        finally:
            self._protocol.close()
            metrics.sessions.dec(1, self._transport.name)
            log.debug("session ended", extra=fields(session=self.session_id))

    async def _close(self, closed: SessionClosed) -> None:
        if closed.error is not None and self._protocol.can_abort:
            code, message, retriable = closed.error
            try:
                await self._act(self._protocol.abort(code, message, retriable=retriable))
            except TransportClosed:
                pass
        self._protocol.close()
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

    async def _watch(self, subscription: Subscription, cancel_scope: trio.CancelScope) -> None:
        """Wake the pusher every ``redelivery_interval`` (to re-send what stays unacknowledged,
        and as a safety net should a commit's wake-up go missing); close on shutdown.

        A timer here rather than a timeout around each of the pusher's waits: a wake-up
        then costs no cancel scope, which adds up when one commit wakes every session.
        """
        shutdown = self._ctx.shutdown
        interval = self._ctx.limits.redelivery_interval
        while not shutdown.is_set():
            with trio.move_on_after(interval):
                await shutdown.wait()
            subscription.notify()
        async with self._lock:  # let the batch in progress finish and be acknowledged
            await self._close(SessionClosed(CloseCode.GOING_AWAY, "server shutting down"))
        cancel_scope.cancel()

    async def _revalidate(self) -> None:
        """Ask the auth provider about the session's token again, every
        ``auth_revalidate_interval`` and at the token's expiry, so a revoked or expired token
        loses its open session within that time (reliability.md B6 #49), not only at the
        next connection.

        A provider that fails (raises) keeps the session: the token was valid and an outage
        of the identity service should not disconnect every client; the next round asks
        again.  A different identity or different grants end the session too (close 4401
        with a retriable ``SYNC_ERROR``), so the client reconnects under what its token
        grants now.
        """
        provider = self._ctx.auth
        assert provider is not None
        assert self.auth is not None
        interval = self._ctx.limits.auth_revalidate_interval
        while True:
            delay = interval
            expires_at = self.auth.expires_at
            if expires_at is not None:
                delay = min(delay, max(0.0, expires_at - self._clock_ms() / 1000))
            await trio.sleep(delay)
            try:
                current = await provider.authenticate(self._token)
            except Exception:
                log.exception(
                    "auth provider failed while re-validating a session; it stays open",
                    extra=fields(session=self.session_id),
                )
                continue
            if current is None:
                log.info(
                    "token no longer valid: session closed",
                    extra=fields(session=self.session_id, node=self.client_node),
                )
                raise SessionClosed(
                    CloseCode.UNAUTHENTICATED,
                    "token revoked or expired",
                    error=(ErrorCode.AUTH_FAILED, "Authentication is no longer valid", False),
                )
            if current.user_id != self.auth.user_id or current.scopes != self.auth.scopes:
                log.info(
                    "identity or grants changed: session closed",
                    extra=fields(session=self.session_id, node=self.client_node),
                )
                raise SessionClosed(
                    CloseCode.UNAUTHENTICATED,
                    "grants changed",
                    error=(ErrorCode.SYNC_ERROR, "The token's grants changed: reconnect", True),
                )
            self.auth = current

    # ------------------------------------------------------------ frames in and out

    async def _act(self, actions: Iterable[Action]) -> None:
        """Send the frames among the state machine's ``actions``, in order."""
        metrics = self._ctx.metrics
        for action in actions:
            if isinstance(action, SendFrame):
                message = action.message
                if isinstance(message, ErrorMessage):
                    metrics.errors.inc(1, message.code)
                elif isinstance(message, OperationRejected):
                    metrics.rejections.inc(1, message.code)
                await self._transport.send(action.frame)
                metrics.bytes_sent.inc(len(action.frame), self._transport.name)

    async def _next_frame(self) -> Frame:
        frame = await self._transport.receive()
        self._ctx.metrics.bytes_received.inc(len(frame), self._transport.name)
        return frame

    async def _feed(self, frame: Frame) -> list[Action]:
        """The state machine's actions for ``frame`` (none for a dropped frame).

        Raises:
            SessionClosed: The frame was a fatal protocol error.
        """
        try:
            return self._protocol.receive_frame(frame)
        except RemoteProtocolError as exc:
            if exc.fatal:
                raise _fatal(exc) from exc
            if isinstance(exc, DuplicateHandshakeError):
                # The reference answers it and goes on (spec 8.3).
                await self._act(self._protocol.send_error(exc.code, str(exc), retriable=False))
            else:
                log.info(
                    "dropped a malformed frame",
                    extra=fields(session=self.session_id, code=exc.code, error=str(exc)),
                )
            return []

    # ------------------------------------------------------------ handshake

    async def _handshake_phase(self) -> None:
        with trio.move_on_after(self._ctx.limits.handshake_timeout) as timer:
            hello: Handshake | None = None
            while hello is None:
                for action in await self._feed(await self._next_frame()):
                    if isinstance(action, HandshakeReceived):
                        hello = action.handshake
                # (A client ``error`` before its handshake is ignored, as the reference does.)
            await self._authenticate(hello)
        if timer.cancelled_caught:
            raise SessionClosed(
                CloseCode.UNAUTHENTICATED,
                "handshake timeout",
                error=(ErrorCode.HANDSHAKE_TIMEOUT, "no handshake within the time limit", True),
            )
        assert hello is not None
        async with self._lock:
            await self._accept(hello)

    async def _refuse(
        self, close_code: int, reason: str, code: str, message: str, *, retriable: bool
    ) -> NoReturn:
        await self._act(self._protocol.refuse_handshake(code, message, retriable=retriable))
        raise SessionClosed(close_code, reason)

    async def _authenticate(self, hello: Handshake) -> None:
        self.client_node = hello.node_id
        provider = self._ctx.auth
        if provider is None:
            self._token = ""
            self.auth = None
        else:
            self._token = hello.auth_token or ""
            try:
                self.auth = await provider.authenticate(self._token)
            except Exception:
                log.exception("auth provider failed", extra=fields(session=self.session_id))
                await self._refuse(
                    CloseCode.INTERNAL_ERROR,
                    "auth provider failed",
                    ErrorCode.SYNC_ERROR,
                    "authentication is unavailable",
                    retriable=True,
                )
            if self.auth is None:
                log.info(
                    "authentication failed",
                    extra=fields(session=self.session_id, node=hello.node_id),
                )
                await self._refuse(
                    CloseCode.UNAUTHENTICATED,
                    "authentication failed",
                    ErrorCode.AUTH_FAILED,
                    "Authentication failed",
                    retriable=False,
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
        protocol = self._protocol
        low, high = ctx.schema_range
        server_time = self._clock_ms()
        with ctx.metrics.store_latency.time("version_vector"):
            vector = await store.version_vector()
        if not low <= hello.schema_version <= high:
            await self._act(
                protocol.reject_schema(
                    node_id=store.node_id,
                    schema_version=high,
                    supported_min=low,
                    supported_max=high,
                    server_time=server_time,
                    version_vector=vector.to_wire(),
                )
            )
            raise SessionClosed(CloseCode.NORMAL, "schema version mismatch")

        watermark = hello.last_delivery_sequence
        server_max: int | None = None
        if watermark is not None:
            with ctx.metrics.store_latency.time("max_delivery_sequence"):
                server_max = await store.max_delivery_sequence()
            if scope_differs(hello.sync_scope, self.scopes) or watermark > server_max:
                watermark = 0  # another view of the data, or another log: start over
        await self._act(
            protocol.accept_handshake(
                node_id=store.node_id,
                version_vector=vector.to_wire(),
                schema_version=high,
                server_time=server_time,
                delivery_start=watermark,
                server_max_delivery_sequence=server_max,
                accepted_scope=self.scopes,
            )
        )
        log.info(
            "session accepted",
            extra=fields(
                session=self.session_id,
                node=hello.node_id,
                user=self.auth.user_id if self.auth else None,
                transport=self._transport.name,
                watermark=watermark,
                format=protocol.wire_format.value,
            ),
        )
        self._last_ack_progress = trio.current_time()
        if watermark is not None:
            await self._push_delivery(
                exclude_node=hello.node_id if watermark > 0 else None, finalize=True
            )
            return
        with ctx.metrics.store_latency.time("max_delivery_sequence"):
            start = await store.max_delivery_sequence()
        with ctx.metrics.store_latency.time("legacy_delta"):
            batches = await legacy_delta(
                store,
                client_vector=VersionVector.from_wire(hello.version_vector),
                batch_size=ctx.batch_size,
                visible=self._visible,
                delta_cursor=hello.delta_cursor,
            )
        for batch in batches:
            await self._act(
                protocol.send_batch(
                    batch.operations,
                    is_final=batch.is_final,
                    batch_index=batch.batch_index,
                    total_batches=batch.total_batches,
                    cursor=batch.cursor,
                )
            )
            ctx.metrics.operations_sent.inc(len(batch.operations))
        # Live relays start at the store's end as of the handshake; anything committed
        # while the delta was computed may arrive twice, which clients dedup by id.
        protocol.relay_from(start)

    # ------------------------------------------------------------ delivery

    def _visible_now(self, op: Operation) -> bool | None:
        """``_visible`` when it needs no store read, ``None`` when it does."""
        scopes = self.scopes
        if scopes is None:
            return True
        required = scopes.get(op.collection)
        if required is None:
            return False
        carried = {**(op.previous_data or {}), **(op.data or {})}
        if any(field not in carried for field in required):
            return None
        return operation_visible(op, scopes, None)

    async def _visible(self, op: Operation) -> bool:
        visible = self._visible_now(op)
        if visible is not None:
            return visible
        # The scope filters on a field the operation does not carry: the record has it.
        with self._ctx.metrics.store_latency.time("find_record"):
            record = await self._ctx.store.find_record(op.collection, op.record_id)
        return operation_visible(op, self.scopes, record.fields if record is not None else None)

    async def _push_delivery(self, *, exclude_node: str | None, finalize: bool) -> None:
        """Send what was committed after the sent position (caller holds the lock)."""
        ctx = self._ctx
        protocol = self._protocol
        # A caught-up session (the usual wake-up) finds everything in the hub's window and
        # sends at once, without store reads or task switches before its frames go out.
        batches = recent_delivery(
            ctx.hub.read_recent,
            after=protocol.sent_through,
            batch_size=ctx.batch_size,
            visible_now=self._visible_now,
            exclude_node=exclude_node,
            finalize_when_empty=finalize,
            own_run=self._own_run,
        )
        if batches is not None:
            for batch in batches:
                await self._act(
                    protocol.send_delivery(
                        batch.operations,
                        base=batch.base,
                        top=batch.max,
                        is_final=batch.is_final,
                        batch_index=batch.batch_index,
                    )
                )
                ctx.metrics.operations_sent.inc(len(batch.operations))
            return
        stream = delivery_stream(
            ctx.store,
            after=self._protocol.sent_through,
            batch_size=ctx.batch_size,
            visible=self._visible,
            exclude_node=exclude_node,
            finalize_when_empty=finalize,
            recent=ctx.hub.read_recent,
            own_run=self._own_run,
        )
        async for batch in stream:
            await self._act(
                self._protocol.send_delivery(
                    batch.operations,
                    base=batch.base,
                    top=batch.max,
                    is_final=batch.is_final,
                    batch_index=batch.batch_index,
                )
            )
            ctx.metrics.operations_sent.inc(len(batch.operations))

    async def _pusher(self, subscription: Subscription) -> None:
        interval = self._ctx.limits.redelivery_interval
        protocol = self._protocol
        while True:
            await subscription.wait()  # a commit, or the watch's timer
            async with self._lock:
                if self._protocol.closed:
                    return  # shutdown closed the session while we waited for the lock
                now = trio.current_time()
                if protocol.awaiting_acknowledgment and now - self._last_ack_progress >= interval:
                    log.debug(
                        "acknowledgments stalled; re-sending from the acknowledged position",
                        extra=fields(
                            session=self.session_id,
                            acked=protocol.delivered_through,
                            sent=protocol.sent_through,
                        ),
                    )
                    protocol.rewind()
                    self._last_ack_progress = now
                await self._push_delivery(exclude_node=self.client_node, finalize=False)

    # ------------------------------------------------------------ the reader

    async def _reader(self, cancel_scope: trio.CancelScope) -> None:
        try:
            while True:
                frame = await self._next_frame()
                async with self._lock:
                    if self._protocol.closed:
                        return  # shutdown closed the session while we waited for the lock
                    confirmed = self._protocol.delivered_through
                    for action in await self._feed(frame):
                        if isinstance(action, OperationsReceived):
                            await self._ingest(action)
                        elif isinstance(action, AcknowledgmentReceived):
                            if action.delivered_through > confirmed:
                                self._last_ack_progress = trio.current_time()
                        else:
                            # error from a client, side channels: accepted, not relayed.
                            log.debug(
                                "ignored a message",
                                extra=fields(session=self.session_id, action=type(action).__name__),
                            )
        except TransportClosed:
            cancel_scope.cancel()

    # ------------------------------------------------------------ ingest

    async def _ingest(self, received: OperationsReceived) -> None:
        ctx = self._ctx
        batch = received.batch
        ops = batch.operations
        ctx.metrics.operations_received.inc(len(ops) + len(received.malformed))
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
                bad,
                RejectionCode.OPERATION_TOO_LARGE
                if bad.code == RejectionCode.OPERATION_TOO_LARGE
                else RejectionCode.INVALID_OPERATION,
                f'Operation "{bad.id}" is malformed: {bad.reason}',
            )
            for bad in received.malformed
        ]
        candidates: list[tuple[int, Operation]] = []
        texts: list[str] = []  # each candidate's JSON: measured here, relayed as is
        sizes: dict[str, int] = {}
        for index, op in received.numbered_operations():
            text = operation_text(op)
            size = text_size(text)
            problem = self._check_operation(op, size, now_ms)
            if problem is None:
                candidates.append((index, op))
                texts.append(text)
                sizes[op.id] = size
            else:
                refusals.append(_Refusal(index, op, *problem))
        published = False
        if candidates:
            appended, woken = await self._append(candidates, texts, sizes)
            refusals += appended
            published = woken >= 0
            if woken > 0:
                # Relay first: the other sessions just woken reach their sends within two
                # scheduler rounds (the wake-up, hypercorn's send lock), so this session
                # steps aside for as long before sending its client's acknowledgment.
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()
        for refusal in sorted(refusals, key=lambda r: r.index):
            await self._act(
                self._protocol.send_operation_rejected(
                    refusal.operation, refusal.code, refusal.message
                )
            )
        await self._act(self._protocol.batch_processed(batch.message_id))
        if published:
            # The publication did not wake this session's pusher (it would only have waited
            # for the lock we hold): read on here, as it would have right after us.
            await self._push_delivery(exclude_node=self.client_node, finalize=False)

    async def _append(
        self, candidates: list[tuple[int, Operation]], texts: list[str], sizes: dict[str, int]
    ) -> tuple[list[_Refusal], int]:
        """Append the operations that passed the checks in one transaction; the refusals,
        and how many other sessions the commit woke (``-1``: nothing applied, nothing
        published).  ``texts``: each candidate's ``operation_text``, kept for the relay of
        those applied."""
        ctx = self._ctx
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
        refusals: list[_Refusal] = []
        applied = 0
        encodings = ctx.encodings
        for (index, op), text, outcome in zip(candidates, texts, result.outcomes, strict=True):
            if outcome.status is AppendStatus.APPLIED:
                applied += 1
                encodings.remember_json(op, text)
            elif outcome.status is AppendStatus.REJECTED:
                refusals.append(
                    _Refusal(
                        index,
                        op,
                        RejectionCode.SCOPE_VIOLATION,
                        f'Operation "{op.id}" in collection "{op.collection}" is outside '
                        "the client's sync scope",
                    )
                )
            elif outcome.status is AppendStatus.INVALID:
                refusals.append(
                    _Refusal(
                        index,
                        op,
                        RejectionCode.INVALID_OPERATION,
                        f'Operation "{op.id}" cannot be applied to its record',
                    )
                )
        ctx.metrics.operations_applied.inc(applied)
        woken = -1
        if applied:
            woken = ctx.hub.publish(
                result.max_delivery_sequence,
                result.applied,
                sizes=sizes,
                skip=self._subscription,
            )
        return refusals, woken

    def _check_operation(self, op: Operation, size: int, now_ms: int) -> tuple[str, str] | None:
        """``(code, message)`` if ``op`` (of ``operation_size`` ``size``) must be refused
        before it reaches the store."""
        limits = self._ctx.limits
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
