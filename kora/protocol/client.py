"""The client side of a sync connection as a pure state machine (no I/O, no clock).

Theory of operation
-------------------

States: ``IDLE -> HANDSHAKING -> SYNCING -> STREAMING``, and ``CLOSED`` from anywhere.

1. ``handshake(...)`` gives the handshake frame (always JSON) and moves to HANDSHAKING.
2. An accepting ``handshake-response`` moves to SYNCING.  Before that, our delivery watermark
   is reset to 0 when the server's ``serverMaxDeliverySequence`` is below it (its log was
   rolled back) or when its ``acceptedScope`` differs from the scope we sent (the watermark
   belongs to another view; spec 4.4).  The wire format switches if the server chose ours.
3. Server -> client batches (spec 4.4):

   * delivery batch (has ``maxDeliverySequence``), ``base = baseDeliverySequence or 0``:
     ``base > watermark``: ignored (a gap: no apply, no ack; the server re-pushes);
     ``base < watermark``: a duplicate: acknowledged at once with ``lastSequenceNumber 0`` and
     ``deliverySequence = watermark``, not applied, no completion;
     ``base == watermark``: ``ApplyBatch``.  Only when the caller reports success
     (``batch_applied``) is it acknowledged with ``deliverySequence = max`` and the watermark
     advanced; after ``batch_apply_failed`` nothing is acknowledged and nothing moves.
   * legacy batch: ``ApplyBatch``, and always acknowledged afterwards (spec 4.4).

   While an apply is outstanding, further batches wait inside the session in arrival order.
   A final batch that was applied (or any final legacy batch) completes the receive side.
4. Client -> server batches: ``send_batch`` while fewer than ``window`` batches are in
   flight.  Acknowledgments must name the oldest batch in flight (a server acknowledges each
   batch once, in order; spec 4.7).  An acknowledgment that does not is reported as a
   non-fatal ``UnexpectedAcknowledgmentError`` and acknowledges nothing, so no operation can
   leave the queue unconfirmed.  The send side of the post-handshake exchange is complete
   when the first final batch sent in SYNCING is acknowledged.
5. Both sides complete: STREAMING (``ReachedStreaming``).

A misbehaving server raises ``RemoteProtocolError`` (fatal ones close the session); calling a
method in the wrong state raises ``LocalProtocolError``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kora.core.ids import uuid7
from kora.core.json_types import JsonValue
from kora.core.operation import Operation
from kora.protocol._session import SessionBase
from kora.protocol.actions import (
    Action,
    ApplyBatch,
    BatchAcknowledged,
    BatchIgnored,
    ErrorReceived,
    HandshakeAccepted,
    HandshakeRejected,
    OperationRejectedReceived,
    ReachedStreaming,
    SideChannelMessage,
    SideChannelReceived,
    WatermarkChanged,
)
from kora.protocol.errors import (
    InvalidValueError,
    LocalProtocolError,
    UnexpectedAcknowledgmentError,
    UnexpectedMessageError,
)
from kora.protocol.limits import DEFAULT_LIMITS, Limits
from kora.protocol.messages import (
    Acknowledgment,
    AwarenessUpdate,
    BlobChunkPush,
    BlobChunkRequest,
    BlobChunkResponse,
    ErrorMessage,
    Handshake,
    HandshakeResponse,
    Message,
    OperationBatch,
    OperationRejected,
    ScopeMap,
    YjsDocUpdate,
)
from kora.protocol.wire_format import offered_wire_formats, wire_format_from_response

__all__ = ["ClientSession", "ClientState"]

_SIDE_CHANNELS = (AwarenessUpdate, YjsDocUpdate, BlobChunkRequest, BlobChunkResponse, BlobChunkPush)


class ClientState(enum.Enum):
    IDLE = "idle"
    HANDSHAKING = "handshaking"
    SYNCING = "syncing"
    STREAMING = "streaming"
    CLOSED = "closed"


def _plain(value: Any) -> Any:
    """Scopes as plain dicts, so that ``==`` compares content only."""
    if isinstance(value, Mapping):
        return {key: _plain(member) for key, member in value.items()}
    return value


class ClientSession(SessionBase):
    """One connection of a client (see the module docstring).

    Args:
        node_id: This client's node id.
        schema_version: Our schema version (spec 1.3).
        binary: Offer ``kora-pb1`` in the handshake.
        window: How many of our batches may await an acknowledgment at once (at least 1;
            the reference client keeps exactly one in flight).
        limits: Decoder limits.
        new_message_id: Makes message ids (UUIDv7 by default).
    """

    def __init__(
        self,
        *,
        node_id: str,
        schema_version: int = 1,
        binary: bool = True,
        window: int = 1,
        limits: Limits = DEFAULT_LIMITS,
        new_message_id: Callable[[], str] = uuid7,
    ) -> None:
        if window < 1:
            raise LocalProtocolError(f"window must be at least 1, got {window}")
        super().__init__(limits=limits, new_message_id=new_message_id)
        self.node_id = node_id
        self.schema_version = schema_version
        self.window = window
        self._offered = offered_wire_formats(binary=binary)
        self._state = ClientState.IDLE
        self._sent_scope: Any = None
        self._watermark = 0
        self._in_flight: deque[OperationBatch] = deque()
        self._final_delta_id: str | None = None
        self._send_complete = False
        self._receive_complete = False
        self._applying: OperationBatch | None = None
        self._waiting: deque[OperationBatch] = deque()

    # ------------------------------------------------------------ state

    @property
    def state(self) -> ClientState:
        return ClientState.CLOSED if self.closed else self._state

    @property
    def watermark(self) -> int:
        """Our delivery watermark: every delivery sequence up to it is applied."""
        return self._watermark

    @property
    def in_flight(self) -> tuple[OperationBatch, ...]:
        """Our batches awaiting acknowledgment, oldest first (re-queue them on disconnect)."""
        return tuple(self._in_flight)

    @property
    def can_send_batch(self) -> bool:
        return (
            self.state in (ClientState.SYNCING, ClientState.STREAMING)
            and len(self._in_flight) < self.window
        )

    # ------------------------------------------------------------ outgoing

    def handshake(
        self,
        *,
        version_vector: Mapping[str, int] | Any,
        last_delivery_sequence: int | None = 0,
        auth_token: str | None = None,
        sync_scope: ScopeMap | None = None,
        sync_queries: Sequence[Mapping[str, JsonValue]] | None = None,
        delta_cursor: str | None = None,
    ) -> list[Action]:
        """Start the connection: the handshake frame.

        Args:
            version_vector: Our version vector (a mapping, or ``VersionVector``).
            last_delivery_sequence: Our delivery watermark for this view (spec 4.4); send
                0 on a first sync.  ``None`` asks for the legacy version-vector path.
            auth_token: The token for the server's auth provider.
            sync_scope: The scope we ask for; the watermark is reset if the server accepts
                a different one.
            sync_queries: Live-query subsets (spec 1.3).
            delta_cursor: Legacy resume cursor.
        """
        self._require(ClientState.IDLE, "handshake")
        message = Handshake(
            message_id=self._new_message_id(),
            node_id=self.node_id,
            version_vector=dict(version_vector.items()),
            schema_version=self.schema_version,
            auth_token=auth_token,
            supported_wire_formats=self._offered,
            sync_scope=sync_scope,
            sync_queries=None if sync_queries is None else tuple(sync_queries),
            delta_cursor=delta_cursor,
            last_delivery_sequence=last_delivery_sequence,
        )
        self._sent_scope = _plain(sync_scope)
        self._watermark = last_delivery_sequence or 0
        self._state = ClientState.HANDSHAKING
        return [self._send(message)]

    def send_batch(
        self,
        operations: Iterable[Operation],
        *,
        is_final: bool = True,
        batch_index: int = 0,
        total_batches: int | None = None,
        cursor: str | None = None,
    ) -> list[Action]:
        """Send a batch of our operations (the defaults make a streaming batch).

        Raises:
            LocalProtocolError: Before the handshake is accepted, or with ``window``
                batches already in flight (check ``can_send_batch``).
        """
        if self.state not in (ClientState.SYNCING, ClientState.STREAMING):
            raise LocalProtocolError(f"cannot send a batch in state {self.state.value}")
        if len(self._in_flight) >= self.window:
            raise LocalProtocolError(f"{self.window} batch(es) already await acknowledgment")
        batch = OperationBatch(
            message_id=self._new_message_id(),
            operations=tuple(operations),
            is_final=is_final,
            batch_index=batch_index,
            total_batches=total_batches,
            cursor=cursor,
        )
        if self._state is ClientState.SYNCING and is_final and self._final_delta_id is None:
            self._final_delta_id = batch.message_id
        self._in_flight.append(batch)
        return [self._send(batch)]

    def send_side_channel(self, message: SideChannelMessage) -> list[Action]:
        """Send an awareness, yjs or blob message (after the handshake was accepted)."""
        if self.state not in (ClientState.SYNCING, ClientState.STREAMING):
            raise LocalProtocolError(f"cannot send {message.TYPE} in state {self.state.value}")
        if not isinstance(message, _SIDE_CHANNELS):
            raise LocalProtocolError(f"{message.TYPE} is not a side-channel message")
        return [self._send(message)]

    # ------------------------------------------------------------ apply outcomes

    def batch_applied(self, message_id: str) -> list[Action]:
        """The operations of the batch of the last ``ApplyBatch`` are stored: acknowledge."""
        batch = self._take_applying(message_id)
        actions: list[Action] = []
        if batch.max_delivery_sequence is not None:
            actions.append(
                self._ack(batch, batch.last_sequence_number, batch.max_delivery_sequence)
            )
            if batch.max_delivery_sequence != self._watermark:
                self._watermark = batch.max_delivery_sequence
                actions.append(WatermarkChanged(self._watermark))
        else:
            actions.append(self._ack(batch, batch.last_sequence_number, None))
        actions.extend(self._completed_receiving(batch))
        actions.extend(self._next_waiting())
        return actions

    def batch_apply_failed(self, message_id: str) -> list[Action]:
        """Applying the batch failed: a delivery batch is then neither acknowledged nor
        counted (the server re-pushes it); a legacy batch is acknowledged anyway, as the
        reference does."""
        batch = self._take_applying(message_id)
        actions: list[Action] = []
        if batch.max_delivery_sequence is None:
            actions.append(self._ack(batch, batch.last_sequence_number, None))
            actions.extend(self._completed_receiving(batch))
        actions.extend(self._next_waiting())
        return actions

    # ------------------------------------------------------------ incoming

    def _receive(self, message: Message) -> list[Action]:
        if self._state is ClientState.IDLE:
            raise LocalProtocolError("send the handshake before receiving")
        if isinstance(message, OperationBatch):
            return self._on_batch(message)
        if isinstance(message, Acknowledgment):
            return self._on_acknowledgment(message)
        if isinstance(message, HandshakeResponse):
            return self._on_handshake_response(message)
        if isinstance(message, ErrorMessage):
            if self._state is ClientState.HANDSHAKING:
                self.close()  # e.g. AUTH_FAILED: the server closes the connection next
            return [ErrorReceived(message)]
        if isinstance(message, OperationRejected):
            return [OperationRejectedReceived(message)]
        if isinstance(message, _SIDE_CHANNELS):
            return [SideChannelReceived(message)]
        raise UnexpectedMessageError(f"a client never receives {message.TYPE}", fatal=False)

    def _on_handshake_response(self, response: HandshakeResponse) -> list[Action]:
        if self._state is not ClientState.HANDSHAKING:
            raise UnexpectedMessageError("handshake-response after the handshake", fatal=False)
        if not response.accepted:
            self.close()
            return [HandshakeRejected(response)]
        actions: list[Action] = []
        watermark = self._watermark
        server_max = response.server_max_delivery_sequence
        if server_max is not None and server_max < watermark:
            watermark = 0  # the server's log was rolled back
        if _plain(response.accepted_scope) != self._sent_scope:
            watermark = 0  # the watermark was earned under another view
        if watermark != self._watermark:
            self._watermark = watermark
            actions.append(WatermarkChanged(watermark))
        wire_format = wire_format_from_response(response.selected_wire_format, self._offered)
        self._codec.switch_to(wire_format)
        self._state = ClientState.SYNCING
        actions.append(HandshakeAccepted(response, wire_format, watermark))
        return actions

    def _on_batch(self, batch: OperationBatch) -> list[Action]:
        if self._state not in (ClientState.SYNCING, ClientState.STREAMING):
            raise UnexpectedMessageError("operation-batch before the handshake-response")
        base = batch.base_delivery_sequence or 0
        if batch.max_delivery_sequence is not None and batch.max_delivery_sequence < base:
            raise InvalidValueError(
                f"batch {batch.message_id!r}: maxDeliverySequence "
                f"{batch.max_delivery_sequence} is below baseDeliverySequence {base}"
            )
        if self._applying is not None:
            self._waiting.append(batch)
            return []
        return self._evaluate(batch)

    def _evaluate(self, batch: OperationBatch) -> list[Action]:
        if batch.max_delivery_sequence is not None:
            base = batch.base_delivery_sequence or 0
            if base > self._watermark:
                return [BatchIgnored(batch, f"gap: base {base} > watermark {self._watermark}")]
            if base < self._watermark:
                return [self._ack(batch, 0, self._watermark)]  # duplicate: re-ack only
        self._applying = batch
        return [ApplyBatch(batch)]

    def _next_waiting(self) -> list[Action]:
        actions: list[Action] = []
        while self._waiting and self._applying is None:
            actions.extend(self._evaluate(self._waiting.popleft()))
        return actions

    def _take_applying(self, message_id: str) -> OperationBatch:
        self._check_open()
        batch = self._applying
        if batch is None or batch.message_id != message_id:
            raise LocalProtocolError(f"batch {message_id!r} is not awaiting its apply outcome")
        self._applying = None
        return batch

    def _completed_receiving(self, batch: OperationBatch) -> list[Action]:
        if batch.is_final and self._state is ClientState.SYNCING:
            self._receive_complete = True
            return self._maybe_streaming()
        return []

    def _on_acknowledgment(self, ack: Acknowledgment) -> list[Action]:
        if not self._in_flight or self._in_flight[0].message_id != ack.acknowledged_message_id:
            expected = self._in_flight[0].message_id if self._in_flight else None
            raise UnexpectedAcknowledgmentError(
                f"acknowledgment of {ack.acknowledged_message_id!r}, expected {expected!r}",
                fatal=False,
            )
        batch = self._in_flight.popleft()
        actions: list[Action] = [BatchAcknowledged(batch, ack)]
        if batch.message_id == self._final_delta_id and self._state is ClientState.SYNCING:
            self._send_complete = True
            actions.extend(self._maybe_streaming())
        return actions

    def _maybe_streaming(self) -> list[Action]:
        if self._send_complete and self._receive_complete:
            self._state = ClientState.STREAMING
            return [ReachedStreaming()]
        return []

    def _require(self, state: ClientState, what: str) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"cannot {what} in state {self.state.value}")
