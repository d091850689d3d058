"""``HandshakeActor``: credentials, handshake, format negotiation, accept or reject.

Per connection attempt it

1. awaits the ``auth`` callable for a fresh token (every attempt, never cached);
2. sends the handshake: node id, version vector, schema version, offered wire formats,
   the scope adopted last time and the delivery watermark of that view;
3. waits (``connect_timeout``) for the handshake-response, then either

   * **accepts**: persists a reset watermark, adopts ``acceptedScope``, checks the clock
     skew (the store re-stamps queued operations stamped more than 60 s ahead of
     ``serverTime``, spec 3.8), emits ``sync:connected``, hands the link to the outbound
     queue and calls ``started()``, which lets the receiver start; or
   * **refuses**: raises :class:`~kora.sync.errors.ConnectionEnded`: a schema mismatch is
     fatal (status ``error``, no retries), ``AUTH_FAILED`` stops automatic retries.

Frames that arrive after the response stay in the incoming mailbox for the receiver.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

from kora.core.version_vector import VersionVector
from kora.protocol.actions import (
    ErrorReceived,
    HandshakeAccepted,
    HandshakeRejected,
    SendFrame,
    WatermarkChanged,
)
from kora.protocol.errors import RemoteProtocolError
from kora.protocol.wire_format import WireFormat
from kora.store import Store
from kora.sync._messages import Attached, EventEmitter, Link, OutboundMessage
from kora.sync._view import ScopeMemo, view_signature
from kora.sync.diagnostics import ConnectionOpened, MetricMessage
from kora.sync.errors import ConnectionEnded
from kora.sync.options import SyncOptions
from kora.sync.status import StatusBoard
from kora.sync.transport import Frame

__all__ = ["MAX_CLOCK_LEAD_MS", "AttemptRecord", "HandshakeActor"]

log: Final = logging.getLogger("kora.sync")

#: Queued operations stamped further than this ahead of ``serverTime`` are rebased (spec 3.8).
MAX_CLOCK_LEAD_MS: Final = 60_000
#: A clock this far behind the server's is worth a warning (nothing is refused for it).
SLOW_CLOCK_WARNING_MS: Final = 600_000


@attrs.define
class AttemptRecord:
    """What the scheduler learns from one attempt's handshake."""

    number: int
    accepted: bool = False
    server_node_id: str | None = None


class HandshakeActor:
    """Runs the handshake of one connection (see the module docstring)."""

    def __init__(
        self,
        *,
        link: Link,
        store: Store,
        options: SyncOptions,
        frames_in: trio.MemoryReceiveChannel[Frame],
        frames_out: trio.MemorySendChannel[Frame],
        outbound: trio.MemorySendChannel[OutboundMessage],
        metrics: trio.MemorySendChannel[MetricMessage],
        board: StatusBoard,
        emit: EventEmitter,
        scope_memo: ScopeMemo,
        attempt: AttemptRecord,
        wall_clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._link = link
        self._store = store
        self._options = options
        self._frames_in = frames_in
        self._frames_out = frames_out
        self._outbound = outbound
        self._metrics = metrics
        self._board = board
        self._emit = emit
        self._scope_memo = scope_memo
        self._attempt = attempt
        self._wall_clock_ms = wall_clock_ms or (lambda: int(time.time() * 1000))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._frames_in, self._frames_out, self._outbound, self._metrics:
            token = await self._token()
            scope = self._scope_memo.scope
            vector = await self._store.version_vector()
            watermark = await self._store.delivery_watermark(view_signature(scope))
            session = self._link.session
            for action in session.handshake(
                version_vector=vector,
                last_delivery_sequence=watermark,
                auth_token=token,
                sync_scope=scope,
            ):
                if isinstance(action, SendFrame):
                    await self._frames_out.send(action.frame)
            with trio.move_on_after(self._options.connect_timeout) as waited:
                accepted = await self._await_response()
            if waited.cancelled_caught:
                raise ConnectionEnded(
                    f"no handshake-response within {self._options.connect_timeout} s"
                )
            await self._accept(accepted)
            task_status.started()

    async def _token(self) -> str | None:
        if self._options.auth is None:
            return None
        auth: Callable[[], Awaitable[str | None]] = self._options.auth
        try:
            return await auth()
        except Exception as exc:
            # The app's callable failed: retry later like a network failure.
            raise ConnectionEnded(f"the auth callable failed: {exc!r}") from exc

    async def _await_response(self) -> HandshakeAccepted:
        session = self._link.session
        while True:
            try:
                frame = await self._frames_in.receive()
            except trio.EndOfChannel:
                raise ConnectionEnded("connection closed during the handshake") from None
            try:
                actions = session.receive_frame(frame)
            except RemoteProtocolError as exc:
                if exc.fatal:
                    raise ConnectionEnded(f"protocol error in handshake: {exc}") from exc
                log.warning("ignored a frame during the handshake: %s", exc)
                continue
            for action in actions:
                if isinstance(action, WatermarkChanged):
                    # Written under the view of the scope the server grants, below.
                    continue
                if isinstance(action, HandshakeAccepted):
                    return action
                if isinstance(action, HandshakeRejected):
                    self._rejected(action)
                if isinstance(action, ErrorReceived):
                    self._error(action)

    def _rejected(self, action: HandshakeRejected) -> None:
        response = action.response
        reason = response.reject_reason or "handshake rejected"
        if reason.startswith("SCHEMA_MISMATCH"):
            self._emit(
                "sync:schema-mismatch",
                {
                    "client_schema_version": self._options.schema_version,
                    "server_schema_version": response.schema_version,
                    "supported_min": response.supported_schema_min,
                    "supported_max": response.supported_schema_max,
                    "reason": reason,
                },
            )
            raise ConnectionEnded(reason, retry=False, fatal=True)
        raise ConnectionEnded(reason)

    def _error(self, action: ErrorReceived) -> None:
        message = action.message
        if message.code == "AUTH_FAILED":
            raise ConnectionEnded(message.message, retry=False, auth_failed=True)
        raise ConnectionEnded(f"{message.code}: {message.message}")

    async def _accept(self, accepted: HandshakeAccepted) -> None:
        response = accepted.response
        if (
            self._options.wire_format == "kora-pb1"
            and accepted.wire_format is not WireFormat.KORA_PB1
        ):
            raise ConnectionEnded(
                "wire_format='kora-pb1' but the server selected "
                f"{response.selected_wire_format or 'json'!r}",
                retry=False,
                fatal=True,
            )
        await self._scope_memo.adopt(self._store, response.accepted_scope)
        view = view_signature(response.accepted_scope)
        if accepted.watermark != await self._store.delivery_watermark(view):
            await self._store.set_delivery_watermark(view, accepted.watermark)
        if response.server_time is not None:
            await self._check_clock(response.server_time)
        now = trio.current_time()
        self._attempt.accepted = True
        self._attempt.server_node_id = response.node_id
        self._board.connected()
        await self._metrics.send(ConnectionOpened(now))
        self._emit(
            "sync:connected",
            {
                "server_node_id": response.node_id,
                "wire_format": accepted.wire_format.value,
                "accepted_scope": response.accepted_scope,
                "attempt": self._attempt.number,
            },
        )
        attached = Attached(
            self._link,
            VersionVector.from_wire(response.version_vector),
            scope=response.accepted_scope,
        )
        await self._outbound.send(attached)
        with trio.move_on_after(self._options.connect_timeout):
            await attached.delta_sent.wait()

    async def _check_clock(self, server_time: int) -> None:
        skew = server_time - self._wall_clock_ms()
        last = await self._store.last_timestamp()
        # Every time, not only when we are ahead: it also sets (or clears) the store's clock
        # correction, before the outbound queue reads the delta.
        count = await self._store.rebase_pending(server_time)
        if last is not None and last.wall_time > server_time + MAX_CLOCK_LEAD_MS:
            lead = last.wall_time - server_time
            log.warning(
                "our clock is %d ms ahead of the server's; %d queued operations re-stamped",
                lead,
                count,
            )
            self._emit(
                "sync:clock-skew",
                {
                    "skew_ms": skew,
                    "lead_ms": lead,
                    "severity": "fast",
                    "rebased": count > 0,
                    "operations": count,
                },
            )
            if count:
                self._emit("sync:clock-rebase", {"skew_ms": skew, "operations": count})
        elif skew > SLOW_CLOCK_WARNING_MS:
            self._emit("sync:clock-skew", {"skew_ms": skew, "severity": "slow-warning"})
