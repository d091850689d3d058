"""What the client and server session state machines share: framing and error handling."""

from __future__ import annotations

from collections.abc import Callable

from kora.protocol.actions import Action, SendFrame
from kora.protocol.errors import LocalProtocolError, RemoteProtocolError
from kora.protocol.limits import Limits
from kora.protocol.messages import Acknowledgment, Message, OperationBatch
from kora.protocol.shared_encoding import SharedEncodings
from kora.protocol.wire_format import Frame, FrameCodec, WireFormat


class SessionBase:
    """Owns the connection's ``FrameCodec`` and turns frames into ``receive`` calls.

    Subclasses implement ``_receive`` and report whether they are closed.
    """

    def __init__(
        self,
        *,
        limits: Limits,
        new_message_id: Callable[[], str],
        shared_encodings: SharedEncodings | None = None,
    ) -> None:
        self._codec = FrameCodec(limits)
        self._shared = shared_encodings
        self._new_message_id = new_message_id
        self._closed = False
        self._fatal_error: RemoteProtocolError | None = None

    @property
    def wire_format(self) -> WireFormat:
        """The format of the frames this session encodes now."""
        return self._codec.wire_format

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fatal_error(self) -> RemoteProtocolError | None:
        """The peer's fatal protocol error that closed this session, if one did."""
        return self._fatal_error

    def receive_frame(self, frame: Frame | bytearray | memoryview) -> list[Action]:
        """Decode one received frame and process its message (see ``receive``).

        Raises:
            RemoteProtocolError: The frame or its message breaks the protocol.  If the
                error is ``fatal`` the session is closed; otherwise drop the frame and go on.
            LocalProtocolError: The session is closed or not started.
        """
        self._check_open()
        try:
            return self._receive_frame(frame)
        except RemoteProtocolError as exc:
            self._on_remote_error(exc)
            raise

    def receive(self, message: Message) -> list[Action]:
        """Process one message from the peer; errors as for ``receive_frame``."""
        self._check_open()
        try:
            return self._receive(message)
        except RemoteProtocolError as exc:
            self._on_remote_error(exc)
            raise

    def close(self) -> None:
        """Mark the session closed (the connection is gone); every later call fails."""
        self._closed = True

    def _receive_frame(self, frame: Frame | bytearray | memoryview) -> list[Action]:
        return self._receive(self._codec.decode(frame))

    def _receive(self, message: Message) -> list[Action]:
        raise NotImplementedError

    def _on_remote_error(self, exc: RemoteProtocolError) -> None:
        if exc.fatal:
            self._closed = True
            self._fatal_error = exc

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the session is closed")

    def _send(self, message: Message) -> SendFrame:
        return SendFrame(self._codec.encode(message, self._shared), message)

    def _ack(
        self, batch: OperationBatch, last_sequence_number: int, delivery_sequence: int | None
    ) -> SendFrame:
        return self._send(
            Acknowledgment(
                message_id=self._new_message_id(),
                acknowledged_message_id=batch.message_id,
                last_sequence_number=last_sequence_number,
                delivery_sequence=delivery_sequence,
            )
        )
