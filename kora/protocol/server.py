"""The server side of one sync connection as a pure state machine (no I/O, no clock).

Theory of operation
-------------------

States: ``AWAITING_HANDSHAKE -> VALIDATING -> SYNCING -> STREAMING``, and ``CLOSED``.

1. The first message must be a handshake (anything else: ``HandshakeRequiredError``,
   fatal; the reference would have accepted it, spec 8.2; a client ``error`` is ignored, as
   the reference does).  It yields ``HandshakeReceived``: authentication, scope resolution
   and the schema check are I/O and policy, so the caller does them and answers with
   ``accept_handshake``, ``reject_schema`` or ``refuse_handshake``.  A second handshake is
   a non-fatal ``DuplicateHandshakeError``.
2. ``accept_handshake`` sends the response (always JSON) with the selected wire format,
   then switches the format, and moves to SYNCING.  For a watermark client the caller
   passes where the delivery stream starts: the client's ``lastDeliverySequence``, or 0 for
   a reset.  A reset is *told* to the client by sending ``serverMaxDeliverySequence`` 0,
   which makes every client drop its watermark (avoiding the reference's silent-reset stall
   of spec 4.4).
3. The caller streams with ``send_delivery`` (or ``send_batch``).  The session keeps two
   positions in the server's delivery sequence: ``sent_through`` and ``delivered_through``
   (what the client confirmed).  Delivery batches must chain: each one's base is
   ``sent_through`` (go on) or ``delivered_through`` (send again what was not confirmed;
   ``rewind`` says so explicitly).  A watermark client sees the positions as
   ``baseDeliverySequence``/``maxDeliverySequence`` and confirms with the acknowledgment's
   ``deliverySequence``; a legacy client (no ``lastDeliverySequence``) gets plain batches,
   and the session remembers which position each one ends at to read its acknowledgment.
   The first final batch ends the post-handshake phase: STREAMING (spec 4.5).
4. Client batches yield ``OperationsReceived``.  The caller sends per-operation outcomes
   (``send_error``/``send_operation_rejected``) and then calls ``batch_processed``, which
   sends the batch's one acknowledgment (``lastSequenceNumber`` = last op's seq or 0).
   Acknowledgments go out exactly once per batch, in arrival order (spec 4.7).  With
   ``lenient_operations`` a JSON batch with malformed operations is not refused whole: they
   come in ``OperationsReceived.malformed``, to be refused one by one.
5. Client acknowledgments advance ``delivered_through`` (never beyond what was sent) and
   yield ``AcknowledgmentReceived``.
6. ``abort`` sends a last ``error`` and closes, in any state, including right after a fatal
   ``RemoteProtocolError`` closed the session (to tell the client its code).
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from kora.core.ids import uuid7
from kora.core.operation import Operation
from kora.protocol._session import SessionBase
from kora.protocol.actions import (
    AcknowledgmentReceived,
    Action,
    ErrorReceived,
    HandshakeReceived,
    OperationsReceived,
    ReachedStreaming,
    SendFrame,
    SideChannelMessage,
    SideChannelReceived,
)
from kora.protocol.errors import (
    DuplicateHandshakeError,
    HandshakeRequiredError,
    LocalProtocolError,
    UnexpectedMessageError,
)
from kora.protocol.limits import DEFAULT_LIMITS, Limits
from kora.protocol.malformed import MalformedOperation
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
from kora.protocol.shared_encoding import SharedEncodings
from kora.protocol.wire_format import Frame, select_wire_format

__all__ = ["MAX_TRACKED_LEGACY_BATCHES", "SCHEMA_MISMATCH_PREFIX", "ServerSession", "ServerState"]

#: ``rejectReason`` of a schema-mismatch response starts with this (spec 1.3).
SCHEMA_MISMATCH_PREFIX = "SCHEMA_MISMATCH"

_SIDE_CHANNELS = (AwarenessUpdate, YjsDocUpdate, BlobChunkRequest, BlobChunkResponse, BlobChunkPush)

#: Legacy delivery batches remembered until acknowledged (the oldest are forgotten first: an
#: acknowledgment that comes that late only confirms less, and the batch is sent again).
MAX_TRACKED_LEGACY_BATCHES: Final = 1000


class ServerState(enum.Enum):
    AWAITING_HANDSHAKE = "awaiting-handshake"
    VALIDATING = "validating"
    SYNCING = "syncing"
    STREAMING = "streaming"
    CLOSED = "closed"


class ServerSession(SessionBase):
    """One client connection on the server (see the module docstring).

    Args:
        binary: Select ``kora-pb1`` for clients that offer it.
        limits: Decoder limits.
        new_message_id: Makes message ids (UUIDv7 by default, as the reference server).
        lenient_operations: Set a JSON batch's malformed operations aside one by one
            (``OperationsReceived.malformed``) instead of refusing the batch.
        shared_encodings: Operations encoded once for all the sessions that send them (one
            instance for every session of a server); frames are the same with or without.
    """

    def __init__(
        self,
        *,
        binary: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        new_message_id: Callable[[], str] = uuid7,
        lenient_operations: bool = False,
        shared_encodings: SharedEncodings | None = None,
    ) -> None:
        super().__init__(
            limits=limits, new_message_id=new_message_id, shared_encodings=shared_encodings
        )
        self._binary = binary
        self._lenient = lenient_operations
        self._state = ServerState.AWAITING_HANDSHAKE
        self.handshake: Handshake | None = None
        self._delivery = False
        self._delivered_through = 0
        self._sent_through = 0
        # Legacy batches in flight: message id -> the position it ends at.
        self._legacy_in_flight: OrderedDict[str, int] = OrderedDict()
        # Client batches not yet acknowledged, with the lastSequenceNumber their ack reports.
        self._unacknowledged: deque[tuple[OperationBatch, int]] = deque()
        self._aborted = False

    @property
    def state(self) -> ServerState:
        return ServerState.CLOSED if self.closed else self._state

    @property
    def uses_delivery_stream(self) -> bool:
        """Whether the client sent ``lastDeliverySequence`` (spec 4.4 rather than 4.3)."""
        return self._delivery

    @property
    def delivered_through(self) -> int:
        """The client's confirmed delivery position: what it has for sure."""
        return self._delivered_through

    @property
    def sent_through(self) -> int:
        """Where the delivery sent so far ends: the next batch's base when going on."""
        return self._sent_through

    @property
    def awaiting_acknowledgment(self) -> bool:
        """Whether something was sent that the client has not confirmed yet."""
        return self._delivered_through < self._sent_through

    @property
    def pending_batches(self) -> tuple[OperationBatch, ...]:
        """Client batches received and not yet acknowledged, oldest first."""
        return tuple(batch for batch, _ in self._unacknowledged)

    @property
    def can_abort(self) -> bool:
        """Whether ``abort`` may be called: the session is open, or a fatal error from the
        peer just closed it and its last ``error`` was not sent yet."""
        return not self._aborted and (not self.closed or self.fatal_error is not None)

    # ------------------------------------------------------------ handshake outcomes

    def accept_handshake(
        self,
        *,
        node_id: str,
        version_vector: Mapping[str, int] | Any,
        schema_version: int,
        server_time: int,
        delivery_start: int | None = None,
        server_max_delivery_sequence: int | None = None,
        accepted_scope: ScopeMap | None = None,
        blob_storage_enabled: bool | None = None,
    ) -> list[Action]:
        """Accept the handshake: the response frame (JSON), then the format switch.

        Args:
            node_id: The server store's node id.
            version_vector: The version vector to reveal (mapping or ``VersionVector``).
            schema_version: The server's schema version.
            server_time: Now, in ms since the epoch (clients check their clock with it).
            delivery_start: For a watermark client: where the delivery stream starts, the
                client's ``lastDeliverySequence`` or 0 for a reset (scope changed, or the
                watermark is beyond the store's log).  ``None`` for a legacy client.
            server_max_delivery_sequence: The store's highest delivery sequence (watermark
                clients only).  Replaced by 0 when ``delivery_start`` resets the client and
                this value is not below its watermark (so would not tell it to reset).
            accepted_scope: The resolved session scope, if any.
            blob_storage_enabled: True when the server persists pushed blob chunks.

        Raises:
            LocalProtocolError: Not validating a handshake, or delivery arguments that do
                not fit the client's handshake.
        """
        handshake = self._validating("accept")
        client_watermark = handshake.last_delivery_sequence
        if client_watermark is None:
            if delivery_start is not None or server_max_delivery_sequence is not None:
                raise LocalProtocolError(
                    "a legacy client (no lastDeliverySequence) gets no delivery fields"
                )
        else:
            if delivery_start is None or server_max_delivery_sequence is None:
                raise LocalProtocolError(
                    "a watermark client needs delivery_start and server_max_delivery_sequence"
                )
            if delivery_start not in (0, client_watermark):
                raise LocalProtocolError(
                    f"delivery_start must be the client's watermark {client_watermark} or 0, "
                    f"got {delivery_start}"
                )
            if delivery_start < client_watermark <= server_max_delivery_sequence:
                # The true maximum would not tell the client to drop its watermark; 0 does.
                # (Below the watermark, as for a watermark beyond the log, it tells already.)
                server_max_delivery_sequence = 0
            self._delivery = True
            self._delivered_through = self._sent_through = delivery_start
        selected = select_wire_format(handshake.supported_wire_formats, binary=self._binary)
        response = HandshakeResponse(
            message_id=self._new_message_id(),
            node_id=node_id,
            version_vector=dict(version_vector.items()),
            schema_version=schema_version,
            accepted=True,
            selected_wire_format=selected.value,
            server_time=server_time,
            server_max_delivery_sequence=server_max_delivery_sequence,
            blob_storage_enabled=blob_storage_enabled,
            accepted_scope=accepted_scope,
        )
        frame = self._send(response)  # the response itself is always JSON
        self._codec.switch_to(selected)
        self._state = ServerState.SYNCING
        return [frame]

    def reject_schema(
        self,
        *,
        node_id: str,
        schema_version: int,
        supported_min: int,
        supported_max: int,
        server_time: int,
        version_vector: Mapping[str, int] | None = None,
    ) -> list[Action]:
        """Refuse a client schema version outside ``[supported_min, supported_max]``.

        Sends the reference's rejecting response and closes the session; close the
        connection after sending.
        """
        handshake = self._validating("reject")
        reason = (
            f"{SCHEMA_MISMATCH_PREFIX}: client schema version {handshake.schema_version} "
            f"not in supported range [{supported_min}, {supported_max}]"
        )
        response = HandshakeResponse(
            message_id=self._new_message_id(),
            node_id=node_id,
            version_vector=dict(version_vector or {}),
            schema_version=schema_version,
            accepted=False,
            reject_reason=reason,
            supported_schema_min=supported_min,
            supported_schema_max=supported_max,
            server_time=server_time,
        )
        actions: list[Action] = [self._send(response)]
        self.close()
        return actions

    def refuse_handshake(
        self,
        code: str = "AUTH_FAILED",
        message: str = "Authentication failed",
        *,
        retriable: bool = False,
    ) -> list[Action]:
        """Refuse the handshake with an ``error`` and close the session.

        ``retriable`` for refusals that are not the client's fault (say, the auth provider
        is down), so that it tries again later.
        """
        self._validating("refuse")
        actions = self.send_error(code, message, retriable=retriable)
        self.close()
        return actions

    def abort(self, code: str, message: str, *, retriable: bool = False) -> list[Action]:
        """Send a last ``error`` and close the session; close the connection after it.

        Allowed in any state while open, and once right after a fatal
        ``RemoteProtocolError`` closed the session (send its ``code`` then).

        Raises:
            LocalProtocolError: ``can_abort`` is false.
        """
        if not self.can_abort:
            raise LocalProtocolError("the session is closed and its last error was sent")
        self._aborted = True
        error = ErrorMessage(
            message_id=self._new_message_id(), code=code, message=message, retriable=retriable
        )
        actions: list[Action] = [self._send(error)]
        self.close()
        return actions

    # ------------------------------------------------------------ outgoing

    def send_batch(
        self,
        operations: Iterable[Operation],
        *,
        is_final: bool = True,
        batch_index: int = 0,
        base_delivery_sequence: int | None = None,
        max_delivery_sequence: int | None = None,
        cursor: str | None = None,
        total_batches: int | None = None,
    ) -> list[Action]:
        """Send operations to the client (delta, delivery stream or live relay).

        For a watermark client both delivery sequences are required and the batch must
        chain: its base is ``delivered_through`` (a re-push) or ``sent_through`` (the max of
        the previous delivery batch).  A legacy client gets neither (and these batches do
        not move its positions: see ``send_delivery``).

        Raises:
            LocalProtocolError: Before acceptance, or delivery fields that do not chain.
        """
        self._require_accepted("send a batch")
        if self._delivery:
            base, top = base_delivery_sequence, max_delivery_sequence
            if base is None or top is None:
                raise LocalProtocolError("a watermark client needs delivery sequences")
            self._chain(base, top)
        elif base_delivery_sequence is not None or max_delivery_sequence is not None:
            raise LocalProtocolError("a legacy client gets no delivery sequences")
        batch = OperationBatch(
            message_id=self._new_message_id(),
            operations=tuple(operations),
            is_final=is_final,
            batch_index=batch_index,
            cursor=cursor,
            total_batches=total_batches,
            base_delivery_sequence=base_delivery_sequence,
            max_delivery_sequence=max_delivery_sequence,
        )
        actions: list[Action] = [self._send(batch)]
        if is_final and self._state is ServerState.SYNCING:
            self._state = ServerState.STREAMING
            actions.append(ReachedStreaming())
        return actions

    def send_delivery(
        self,
        operations: Iterable[Operation],
        *,
        base: int,
        top: int,
        is_final: bool = True,
        batch_index: int = 0,
    ) -> list[Action]:
        """Send the delivery batch ``base..top`` of the server's log, to either kind of client.

        ``base`` must be ``sent_through`` (go on) or ``delivered_through`` (send again from
        what the client confirmed); ``sent_through`` becomes ``top``.  A watermark client
        gets the batch with these delivery sequences.  A legacy client gets a plain final
        batch, and its acknowledgment confirms ``top``; an empty one is not sent at all and
        counts as confirmed at once (there is nothing to acknowledge).

        Raises:
            LocalProtocolError: Before acceptance, or ``base`` does not chain.
        """
        if self._delivery:
            return self.send_batch(
                operations,
                is_final=is_final,
                batch_index=batch_index,
                base_delivery_sequence=base,
                max_delivery_sequence=top,
            )
        self._require_accepted("send a delivery batch")
        operations = tuple(operations)
        self._chain(base, top)
        if not operations:
            self._delivered_through = self._sent_through = max(self._delivered_through, top)
            return []
        actions = self.send_batch(operations)
        sent = actions[0]
        assert isinstance(sent, SendFrame)
        self._legacy_in_flight[sent.message.message_id] = top
        while len(self._legacy_in_flight) > MAX_TRACKED_LEGACY_BATCHES:
            self._legacy_in_flight.popitem(last=False)
        return actions

    def relay_from(self, position: int) -> None:
        """Start a legacy client's delivery after ``position`` (after its version-vector
        delta, which covered the log up to there).

        Raises:
            LocalProtocolError: Before acceptance, or for a watermark client (whose start is
                ``accept_handshake``'s ``delivery_start``).
        """
        self._require_accepted("start a relay")
        if self._delivery:
            raise LocalProtocolError("a watermark client's delivery starts at the handshake")
        self._delivered_through = self._sent_through = position
        self._legacy_in_flight.clear()

    def rewind(self) -> None:
        """Go on from ``delivered_through``: what was sent and not confirmed is sent again.

        For a client whose acknowledgments stalled (it dropped or could not apply a batch).
        A client skips what it already has, so this costs bandwidth, never correctness.
        """
        self._require_accepted("rewind")
        self._sent_through = self._delivered_through

    def batch_processed(self, message_id: str) -> list[Action]:
        """Acknowledge the oldest unacknowledged client batch, which must be ``message_id``.

        Call it after every per-operation error or rejection of that batch was sent.  The
        acknowledgment reports the ``sequenceNumber`` of the batch's last operation as the
        client sent it (a malformed one included), or 0.
        """
        self._check_open()
        if not self._unacknowledged or self._unacknowledged[0][0].message_id != message_id:
            expected = self._unacknowledged[0][0].message_id if self._unacknowledged else None
            raise LocalProtocolError(
                f"acknowledge client batches in arrival order: next is {expected!r}, "
                f"not {message_id!r}"
            )
        batch, last_sequence_number = self._unacknowledged.popleft()
        return [self._ack(batch, last_sequence_number, None)]

    def send_error(self, code: str, message: str, *, retriable: bool) -> list[Action]:
        """Send an ``error`` message (per-op refusals that end nothing, or fatal ones)."""
        self._check_open()
        error = ErrorMessage(
            message_id=self._new_message_id(), code=code, message=message, retriable=retriable
        )
        return [self._send(error)]

    def send_operation_rejected(
        self,
        operation: Operation | MalformedOperation,
        code: str,
        message: str,
        *,
        retriable: bool = False,
    ) -> list[Action]:
        """Refuse one operation for good (the client records it and never resends it)."""
        self._require_accepted("reject an operation")
        rejected = OperationRejected(
            message_id=self._new_message_id(),
            operation_id=operation.id,
            collection=operation.collection,
            record_id=operation.record_id,
            code=code,
            message=message,
            retriable=retriable,
        )
        return [self._send(rejected)]

    def send_side_channel(self, message: SideChannelMessage) -> list[Action]:
        """Relay an awareness, yjs or blob message to this client."""
        self._require_accepted(f"send {message.TYPE}")
        if not isinstance(message, _SIDE_CHANNELS):
            raise LocalProtocolError(f"{message.TYPE} is not a side-channel message")
        return [self._send(message)]

    # ------------------------------------------------------------ incoming

    def _receive_frame(self, frame: Frame | bytearray | memoryview) -> list[Action]:
        if not self._lenient or self._state not in (ServerState.SYNCING, ServerState.STREAMING):
            return super()._receive_frame(frame)
        message, malformed = self._codec.decode_lenient(frame)
        if malformed:
            assert isinstance(message, OperationBatch)
            return self._receive_batch(message, malformed)
        return self._receive(message)

    def _receive_batch(
        self, batch: OperationBatch, malformed: tuple[MalformedOperation, ...] = ()
    ) -> list[Action]:
        last = batch.last_sequence_number
        if malformed and malformed[-1].index == len(batch.operations) + len(malformed) - 1:
            last = malformed[-1].sequence_number or 0  # the batch as sent ends with it
        self._unacknowledged.append((batch, last))
        return [OperationsReceived(batch, malformed)]

    def _receive(self, message: Message) -> list[Action]:
        if isinstance(message, ErrorMessage):
            return [ErrorReceived(message)]  # the reference ignores client errors
        if isinstance(message, Handshake):
            if self._state is not ServerState.AWAITING_HANDSHAKE:
                raise DuplicateHandshakeError("Handshake already completed", fatal=False)
            self.handshake = message
            self._state = ServerState.VALIDATING
            return [HandshakeReceived(message)]
        if self._state not in (ServerState.SYNCING, ServerState.STREAMING):
            raise HandshakeRequiredError(
                f'Received "{message.TYPE}" before a successful handshake. Send a handshake first.'
            )
        if isinstance(message, OperationBatch):
            return self._receive_batch(message)
        if isinstance(message, Acknowledgment):
            if self._delivery:
                position = message.delivery_sequence
            else:
                position = self._legacy_in_flight.pop(message.acknowledged_message_id, None)
            if position is not None:
                confirmed = min(position, self._sent_through)  # never beyond what was sent
                self._delivered_through = max(self._delivered_through, confirmed)
            return [AcknowledgmentReceived(message, self._delivered_through)]
        if isinstance(message, _SIDE_CHANNELS):
            return [SideChannelReceived(message)]
        raise UnexpectedMessageError(f"a server never receives {message.TYPE}", fatal=False)

    def _require_accepted(self, what: str) -> None:
        if self.state not in (ServerState.SYNCING, ServerState.STREAMING):
            raise LocalProtocolError(f"cannot {what} in state {self.state.value}")

    def _chain(self, base: int, top: int) -> None:
        if base not in (self._delivered_through, self._sent_through) or top < base:
            raise LocalProtocolError(
                f"delivery batch {base}..{top} does not chain from "
                f"{self._delivered_through} (confirmed) or {self._sent_through} (sent)"
            )
        self._sent_through = top

    def _validating(self, what: str) -> Handshake:
        if self.state is not ServerState.VALIDATING or self.handshake is None:
            raise LocalProtocolError(f"cannot {what} a handshake in state {self.state.value}")
        return self.handshake
