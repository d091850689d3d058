"""HTTP long-polling: the same sessions and messages as the WebSocket, over plain requests.

The reference's HTTP transport is not interoperable as shipped (spec 8.12), so this one is our
own design, documented in ``docs/server.md``:

* ``POST /kora/sync/handshake``: the body is one handshake frame.  The server starts a
  session and answers ``200`` with the session id (header ``Kora-Session`` and, in JSON, the
  ``session`` field) and the frames available right away: the handshake-response and, for an
  accepted handshake, the start of the delivery stream.
* ``POST /kora/sync/{session}/send?seq=N``: a batch of frames, handled in order, ``202``.
  ``seq`` (1, 2, 3, ...) makes a retried request harmless: a ``seq`` already handled is
  answered ``202`` and ignored, a gap is ``409``.  Without ``seq`` nothing is deduplicated.
* ``GET /kora/sync/{session}/poll?cursor=K``: frames numbered above ``K`` (the last frame
  number the client has received; ``0`` at first).  Frames up to ``K`` are forgotten, others
  are kept until a later poll moves the cursor past them, so a lost response loses nothing.
  When nothing is queued the request is held for up to ``long_poll_hold`` (25 s) and answered
  with no frames.  A newer poll of the same session ends an older one that is still held.
  Once the session has closed and every frame is delivered: ``410`` with the close code.
* ``DELETE /kora/sync/{session}``: close the session, ``204``.

Bodies: ``application/json`` is ``{"cursor": K, "frames": [<frame>, ...]}`` on the way out and
a JSON array of frames (or one frame object) on the way in.  ``application/x-kora-pb`` bodies
are frames each preceded by its length as an unsigned LEB128 varint; the cursor travels in the
``Kora-Cursor`` header (always present).  Auth: the handshake's ``authToken`` authenticates the
session; the 256-bit random session id then acts as the credential for its other requests.
"""

from __future__ import annotations

import json
import math
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from kora.protocol.long_poll_framing import decode_varint_frames, encode_varint_frames
from kora.server.context import ServerContext
from kora.server.http import (
    BodyTooLarge,
    ClientDisconnected,
    header,
    query_param,
    read_body,
    send_bytes,
    send_json,
)
from kora.server.logs import fields, get_logger
from kora.server.transport import (
    ASGIReceive,
    ASGIScope,
    ASGISend,
    CloseCode,
    Frame,
    FrameTransport,
    TransportClosed,
)

__all__ = [
    "BINARY_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "LongPollEndpoints",
    "LongPollTransport",
    "decode_varint_frames",
    "encode_varint_frames",
    "split_json_frames",
]

log = get_logger(__name__)

JSON_CONTENT_TYPE: Final = "application/json"
BINARY_CONTENT_TYPE: Final = "application/x-kora-pb"
SESSION_HEADER: Final = "kora-session"
CURSOR_HEADER: Final = "kora-cursor"
#: Frames a client may hand in ahead of the session (the send request waits beyond that).
INBOUND_QUEUE: Final = 16
#: Most frames one poll response carries.
MAX_FRAMES_PER_POLL: Final = 256

RunSession = Callable[[FrameTransport, str], Awaitable[None]]


# ---------------------------------------------------------------- body framing


def split_json_frames(text: str) -> list[str]:
    """The raw text of each frame of a JSON array body (or of a single-object body).

    The frames are sliced out, not re-encoded, so the codec sees exactly what the client
    sent and applies all of its own checks.

    Raises:
        ValueError: The body is not a JSON array of objects, or one object.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        return [stripped]
    if not stripped.startswith("["):
        raise ValueError("expected a JSON array of frames")
    decoder = json.JSONDecoder()
    frames: list[str] = []
    position = 1
    expect_item = True
    while True:
        while position < len(stripped) and stripped[position] in " \t\r\n":
            position += 1
        if position >= len(stripped):
            raise ValueError("unterminated JSON array")
        char = stripped[position]
        if char == "]" and (not frames or not expect_item):
            if position != len(stripped) - 1:
                raise ValueError("data after the JSON array")
            return frames
        if char == "," and not expect_item:
            position += 1
            expect_item = True
            continue
        if not expect_item or char != "{":
            raise ValueError("expected a frame object")
        try:
            _, end = decoder.raw_decode(stripped, position)
        except RecursionError:
            raise ValueError("frame nested too deeply") from None
        frames.append(stripped[position:end])
        position = end
        expect_item = False


# ---------------------------------------------------------------- transport


class LongPollTransport:
    """A session's mailbox: frames in from ``send`` requests, numbered frames out to polls."""

    name = "long_poll"

    def __init__(self, *, queue_frames: int, clock: Callable[[], float] = trio.current_time):
        self._clock = clock
        self._inbound_send, self._inbound_receive = trio.open_memory_channel[Frame](INBOUND_QUEUE)
        self._outbound: deque[tuple[int, Frame]] = deque()
        self._queue_frames = queue_frames
        self._next_number = 1
        self._changed = trio.Event()
        self.closed: TransportClosed | None = None
        self.waiting_for_input = False
        self.last_activity = clock()
        self.last_send_seq = 0
        self.poll_generation = 0
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- session side (FrameTransport)

    async def receive(self) -> Frame:
        if self.closed is not None:
            raise self.closed
        self.waiting_for_input = True
        self._notify()
        try:
            frame = await self._inbound_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self.closed or TransportClosed(CloseCode.NORMAL) from None
        finally:
            self.waiting_for_input = False
        self.bytes_received += len(frame)
        return frame

    async def send(self, frame: Frame) -> None:
        while self.closed is None and len(self._outbound) >= self._queue_frames:
            await self._changed.wait()  # the client has not polled: wait, drop nothing
        if self.closed is not None:
            raise self.closed
        self._outbound.append((self._next_number, frame))
        self._next_number += 1
        self.bytes_sent += len(frame)
        self._notify()

    async def close(self, code: int, reason: str) -> None:
        self.close_nowait(code, reason)
        await trio.lowlevel.checkpoint()

    # -- HTTP side

    def close_nowait(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = TransportClosed(code, reason)
            self._inbound_send.close()
            self._notify()

    async def put_inbound(self, frame: Frame) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            await self._inbound_send.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self.closed or TransportClosed(CloseCode.NORMAL) from None

    def acknowledge(self, cursor: int) -> None:
        """The client has every frame numbered up to ``cursor``."""
        removed = False
        while self._outbound and self._outbound[0][0] <= cursor:
            self._outbound.popleft()
            removed = True
        if removed:
            self._notify()

    def frames_after(
        self, cursor: int, limit: int = MAX_FRAMES_PER_POLL
    ) -> list[tuple[int, Frame]]:
        return [item for item in self._outbound if item[0] > cursor][:limit]

    def begin_poll(self) -> int:
        """Start a poll; an older poll still held sees the new generation and returns."""
        self.poll_generation += 1
        self._notify()
        return self.poll_generation

    @property
    def queued(self) -> int:
        return len(self._outbound)

    @property
    def last_number(self) -> int:
        return self._next_number - 1

    @property
    def outbound_full(self) -> bool:
        return len(self._outbound) >= self._queue_frames

    def touch(self) -> None:
        self.last_activity = self._clock()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()


# ---------------------------------------------------------------- endpoints


class LongPollEndpoints:
    """The ``/kora/sync/...`` routes and the long-poll sessions behind them."""

    PREFIX: Final = "/kora/sync/"

    def __init__(self, ctx: ServerContext, run_session: RunSession) -> None:
        self._ctx = ctx
        self._run_session = run_session
        self._sessions: dict[str, LongPollTransport] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def open_sessions(self) -> int:
        return sum(1 for t in self._sessions.values() if t.closed is None)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the long-poll sessions' tasks and expire idle ones, until cancelled or shut down.

        On shutdown every session is told to close (1001) and given ``shutdown_timeout`` to
        finish the batch in progress.
        """
        async with trio.open_nursery() as background:
            background.start_soon(self._expire_idle)
            with trio.CancelScope() as sessions_scope:
                async with trio.open_nursery() as sessions:
                    self._nursery = sessions
                    task_status.started()
                    await self._ctx.shutdown.wait()
                    self._nursery = None
                    # Sessions close themselves on shutdown; the rest is cut at the deadline.
                    sessions_scope.deadline = (
                        trio.current_time() + self._ctx.limits.shutdown_timeout
                    )
            background.cancel_scope.cancel()

    async def _expire_idle(self) -> None:
        ttl = self._ctx.limits.long_poll_session_ttl
        while True:
            await trio.sleep(min(ttl / 4, 5.0))
            now = trio.current_time()
            for session_id, transport in list(self._sessions.items()):
                if now - transport.last_activity > ttl:
                    if transport.closed is None:
                        log.info("long-poll session expired", extra=fields(session=session_id))
                    transport.close_nowait(CloseCode.GOING_AWAY, "session expired")
                    del self._sessions[session_id]
            self._ctx.long_poll_queue_depth = sum(t.queued for t in self._sessions.values())

    async def handle(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        path = str(scope["path"])[len(self.PREFIX) :]
        method = str(scope["method"]).upper()
        parts = path.split("/")
        if path == "handshake":
            if method != "POST":
                await send_json(
                    send, 405, {"error": "method not allowed"}, headers=[("allow", "POST")]
                )
                return
            await self._handshake(scope, receive, send)
            return
        transport = self._sessions.get(parts[0]) if parts and parts[0] else None
        if transport is None:
            await send_json(send, 404, {"error": "unknown or expired session"})
            return
        transport.touch()
        if len(parts) == 1 and method == "DELETE":
            transport.close_nowait(CloseCode.NORMAL, "client closed the session")
            del self._sessions[parts[0]]
            await send_bytes(send, 204, b"")
        elif len(parts) == 2 and parts[1] == "send" and method == "POST":
            await self._send(transport, scope, receive, send)
        elif len(parts) == 2 and parts[1] == "poll" and method == "GET":
            await self._poll(transport, scope, receive, send, session_id=None)
        elif len(parts) <= 2:
            await send_json(send, 405, {"error": "method not allowed"})
        else:
            await send_json(send, 404, {"error": "not found"})

    # -- handshake

    async def _handshake(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        ctx = self._ctx
        if ctx.shutdown.is_set() or self._nursery is None:
            await send_json(
                send, 503, {"error": "server shutting down"}, headers=[("retry-after", "5")]
            )
            return
        frames = await self._read_frames(scope, receive, send)
        if frames is None:
            return
        if len(frames) != 1:
            await send_json(send, 400, {"error": "the handshake body must hold exactly one frame"})
            return
        session_id = secrets.token_urlsafe(32)
        if not ctx.sessions.try_register(session_id, "long_poll"):
            ctx.metrics.connections_refused.inc(1, "max_connections")
            await send_json(
                send,
                503,
                {"error": "MAX_CONNECTIONS", "message": "max connections reached"},
                headers=[("retry-after", "5")],
            )
            return
        transport = LongPollTransport(queue_frames=ctx.limits.long_poll_queue_frames)
        self._sessions[session_id] = transport
        self._nursery.start_soon(self._session_task, transport, session_id)
        await transport.put_inbound(frames[0])
        # Answer once the handshake is handled: the session waits for more input, has
        # filled the queue (the rest comes with polls), or has closed.
        with trio.move_on_after(ctx.limits.handshake_timeout):
            while not (
                transport.closed is not None
                or transport.outbound_full
                or (transport.waiting_for_input and transport.queued)
            ):
                await transport.wait_changed()
        await self._respond_frames(scope, send, transport, cursor=0, session_id=session_id)

    async def _session_task(self, transport: LongPollTransport, session_id: str) -> None:
        try:
            await self._run_session(transport, session_id)
        finally:
            self._ctx.sessions.unregister(session_id)
            transport.close_nowait(CloseCode.NORMAL, "session ended")

    # -- send

    async def _send(
        self, transport: LongPollTransport, scope: ASGIScope, receive: ASGIReceive, send: ASGISend
    ) -> None:
        seq_text = query_param(scope, "seq")
        seq: int | None = None
        if seq_text is not None:
            if not seq_text.isdigit():
                await send_json(send, 400, {"error": "seq must be a non-negative integer"})
                return
            seq = int(seq_text)
        frames = await self._read_frames(scope, receive, send)
        if frames is None:
            return
        if seq is not None:
            if seq <= transport.last_send_seq:
                await send_json(send, 202, {"duplicate": True})
                return
            if seq != transport.last_send_seq + 1:
                await send_json(
                    send, 409, {"error": "seq gap", "expected": transport.last_send_seq + 1}
                )
                return
            transport.last_send_seq = seq
        try:
            for frame in frames:
                await transport.put_inbound(frame)
        except TransportClosed as closed:
            await send_json(send, 410, {"code": closed.code, "reason": closed.reason})
            return
        await send_json(send, 202, {"accepted": len(frames)})

    # -- poll

    async def _poll(
        self,
        transport: LongPollTransport,
        scope: ASGIScope,
        receive: ASGIReceive,
        send: ASGISend,
        *,
        session_id: str | None,
    ) -> None:
        cursor_text = query_param(scope, "cursor") or "0"
        if not cursor_text.isdigit():
            await send_json(send, 400, {"error": "cursor must be a non-negative integer"})
            return
        cursor = int(cursor_text)
        if cursor > transport.last_number:
            await send_json(send, 400, {"error": "cursor is ahead of the session"})
            return
        transport.acknowledge(cursor)
        generation = transport.begin_poll()
        with trio.move_on_after(self._ctx.limits.long_poll_hold):
            async with trio.open_nursery() as nursery:
                # A client that hangs up must not have frames "delivered" into the void:
                # they stay queued because its cursor never moved past them.
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                while (
                    not transport.frames_after(cursor, 1)
                    and transport.closed is None
                    and transport.poll_generation == generation
                    and not self._ctx.shutdown.is_set()
                ):
                    await transport.wait_changed()
                nursery.cancel_scope.cancel()
        transport.touch()
        await self._respond_frames(scope, send, transport, cursor=cursor, session_id=session_id)

    async def _respond_frames(
        self,
        scope: ASGIScope,
        send: ASGISend,
        transport: LongPollTransport,
        *,
        cursor: int,
        session_id: str | None,
    ) -> None:
        items = transport.frames_after(cursor)
        if not items and transport.closed is not None:
            body: dict[str, object] = {
                "code": transport.closed.code,
                "reason": transport.closed.reason,
            }
            if session_id is not None:
                body["session"] = session_id
            await send_json(send, 410, body)
            return
        next_cursor = items[-1][0] if items else cursor
        headers = [(CURSOR_HEADER, str(next_cursor))]
        if session_id is not None:
            headers.append((SESSION_HEADER, session_id))
        frames = [frame for _, frame in items]
        accept = header(scope, b"accept") or ""
        if BINARY_CONTENT_TYPE in accept or any(isinstance(f, bytes) for f in frames):
            payload = encode_varint_frames(
                [f.encode("utf-8") if isinstance(f, str) else f for f in frames]
            )
            await send_bytes(send, 200, payload, content_type=BINARY_CONTENT_TYPE, headers=headers)
            return
        head = (
            {"cursor": next_cursor}
            if session_id is None
            else {
                "session": session_id,
                "cursor": next_cursor,
            }
        )
        prefix = json.dumps(head, separators=(",", ":"))[:-1]
        text = prefix + ',"frames":[' + ",".join(str(f) for f in frames) + "]}"
        await send_bytes(
            send, 200, text.encode("utf-8"), content_type=JSON_CONTENT_TYPE, headers=headers
        )

    # -- bodies

    async def _read_frames(
        self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend
    ) -> list[Frame] | None:
        """The frames of a request body, or ``None`` after answering an error."""
        try:
            body = await read_body(scope, receive, limit=self._ctx.limits.max_message_bytes)
        except BodyTooLarge as exc:
            await send_json(send, 413, {"error": str(exc)})
            return None
        except ClientDisconnected:
            return None
        content_type = (header(scope, b"content-type") or JSON_CONTENT_TYPE).split(";")[0]
        try:
            if content_type.strip().lower() == BINARY_CONTENT_TYPE:
                return list(decode_varint_frames(body))
            return list(split_json_frames(body.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:
            await send_json(send, 400, {"error": f"malformed body: {exc}"})
            return None


async def _cancel_on_disconnect(receive: ASGIReceive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            await trio.sleep(math.inf)
