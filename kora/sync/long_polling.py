"""``LongPollingTransport``: the sync protocol over plain HTTP requests (httpx).

It speaks the server's long-polling endpoints (docs/server.md; the reference's HTTP
transport is not interoperable, spec 8.12, so this is Kora for Python's own design):

* opening checks ``GET /health`` so that a server that is down fails the attempt at once;
* the first frame sent must be the handshake: ``POST /kora/sync/handshake`` answers with
  the session id (header ``Kora-Session``) and the first frames;
* later frames go out in order, one request at a time (whatever is queued is sent
  together), as ``POST /kora/sync/{session}/send?seq=N``: ``seq`` makes a retry harmless;
* one poll at a time, ``GET /kora/sync/{session}/poll?cursor=K``, where ``K`` is the number
  of the last frame received; the server holds an empty poll for a while, and after an empty
  answer the next poll waits ``poll_interval``;
* ``410`` (the session ended) or any HTTP failure closes the transport.

Responses are always asked for as ``application/x-kora-pb`` (each frame preceded by its
length as an unsigned LEB128 varint), which returns every frame byte for byte; a frame that
starts with ``{`` is JSON and is handed on as text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, final

import httpx
import trio

from kora.protocol.long_poll_framing import decode_varint_frames, encode_varint_frames
from kora.sync.errors import TransportClosed
from kora.sync.transport import Frame, Transport

__all__ = [
    "BINARY_CONTENT_TYPE",
    "LongPollingTransport",
    "decode_varint_frames",
    "encode_varint_frames",
    "open_long_polling_transport",
]

log: Final = logging.getLogger("kora.sync")

BINARY_CONTENT_TYPE: Final = "application/x-kora-pb"
_PREFIX: Final = "/kora/sync"
#: Frames buffered each way inside the transport.
_QUEUE: Final = 64
#: Seconds a poll may take: the server holds an empty poll for about 25 s.
_POLL_TIMEOUT: Final = 60.0
#: Seconds the closing DELETE may take.
_CLOSE_TIMEOUT: Final = 2.0


def _as_frame(raw: bytes) -> Frame:
    if raw[:1] == b"{":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return raw


def _as_bytes(frame: Frame) -> bytes:
    return frame.encode("utf-8") if isinstance(frame, str) else frame


@final
class LongPollingTransport:
    """A :class:`~kora.sync.transport.Transport` over the long-polling endpoints.

    Made by :func:`open_long_polling_transport`, which owns its background tasks.
    """

    def __init__(self, client: httpx.AsyncClient, base_url: str, *, poll_interval: float) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._poll_interval = poll_interval
        self._session: str | None = None
        self._send_seq = 0
        self._outgoing_send, self._outgoing = trio.open_memory_channel[Frame](_QUEUE)
        self._incoming_send, self._incoming = trio.open_memory_channel[Frame](_QUEUE)
        self._closed: str | None = None
        self._session_ready = trio.Event()

    # -------------------------------------------------------------- the interface

    async def send(self, frame: Frame) -> None:
        if self._closed is not None:
            await trio.lowlevel.checkpoint()
            raise TransportClosed(self._closed)
        try:
            await self._outgoing_send.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed(self._closed or "long-polling transport closed") from None

    async def receive(self) -> Frame:
        try:
            return await self._incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed(self._closed or "long-polling transport closed") from None

    async def aclose(self) -> None:
        session = self._session
        if self._closed is None:
            self._close("Client disconnecting")
            if session is not None:
                with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                    try:
                        await self._client.delete(f"{self._base}{_PREFIX}/{session}")
                    except httpx.HTTPError:
                        pass  # the server expires idle sessions anyway
        await trio.lowlevel.checkpoint()

    # -------------------------------------------------------------- background

    async def check_server(self) -> None:
        """Fail fast when the server does not answer (``GET /health``)."""
        try:
            response = await self._client.get(f"{self._base}/health")
        except httpx.HTTPError as exc:
            raise TransportClosed(f"server not reachable: {exc!r}") from exc
        if response.status_code >= 500:
            raise TransportClosed(f"server not healthy: HTTP {response.status_code}")

    async def run_sender(self) -> None:
        try:
            async for frame in self._outgoing:
                frames = [frame]
                while len(frames) < _QUEUE:
                    try:
                        frames.append(self._outgoing.receive_nowait())
                    except trio.WouldBlock:
                        break
                if self._session is None:
                    await self._handshake(frames[0])
                    frames = frames[1:]
                if frames:
                    await self._post(frames)
        except TransportClosed as exc:
            self._close(exc.reason)
        except httpx.HTTPError as exc:
            self._close(f"long-polling request failed: {exc!r}")

    async def run_poller(self) -> None:
        await self._session_ready.wait()
        cursor = self._cursor_after_handshake
        try:
            while self._closed is None:
                response = await self._client.get(
                    f"{self._base}{_PREFIX}/{self._session}/poll",
                    params={"cursor": str(cursor)},
                    headers={"accept": BINARY_CONTENT_TYPE},
                    timeout=_POLL_TIMEOUT,
                )
                frames = await self._frames_of(response)
                cursor = int(response.headers.get("kora-cursor", cursor))
                for frame in frames:
                    await self._incoming_send.send(frame)
                if not frames:
                    await trio.sleep(self._poll_interval)
        except TransportClosed as exc:
            self._close(exc.reason)
        except httpx.HTTPError as exc:
            self._close(f"long-polling request failed: {exc!r}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # -------------------------------------------------------------- requests

    async def _handshake(self, frame: Frame) -> None:
        response = await self._client.post(
            f"{self._base}{_PREFIX}/handshake",
            content=encode_varint_frames([_as_bytes(frame)]),
            headers={"content-type": BINARY_CONTENT_TYPE, "accept": BINARY_CONTENT_TYPE},
        )
        session = response.headers.get("kora-session")
        frames = await self._frames_of(response)
        if session is None:
            raise TransportClosed(f"handshake refused: HTTP {response.status_code}")
        self._session = session
        self._cursor_after_handshake = int(response.headers.get("kora-cursor", "0"))
        self._session_ready.set()
        for received in frames:
            await self._incoming_send.send(received)

    async def _post(self, frames: list[Frame]) -> None:
        self._send_seq += 1
        response = await self._client.post(
            f"{self._base}{_PREFIX}/{self._session}/send",
            params={"seq": str(self._send_seq)},
            content=encode_varint_frames([_as_bytes(frame) for frame in frames]),
            headers={"content-type": BINARY_CONTENT_TYPE},
        )
        if response.status_code == 410 or response.status_code == 404:
            raise TransportClosed(self._reason_of(response))
        if response.status_code >= 400:
            raise TransportClosed(f"send refused: HTTP {response.status_code}")

    async def _frames_of(self, response: httpx.Response) -> list[Frame]:
        if response.status_code in (404, 410):
            raise TransportClosed(self._reason_of(response))
        if response.status_code != 200:
            raise TransportClosed(f"unexpected HTTP {response.status_code}")
        try:
            return [_as_frame(raw) for raw in decode_varint_frames(response.content)]
        except ValueError as exc:
            raise TransportClosed(f"malformed long-polling body: {exc}") from exc

    @staticmethod
    def _reason_of(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            reason = body.get("reason") or body.get("error")
            if isinstance(reason, str) and reason:
                return reason
        return f"session closed (HTTP {response.status_code})"

    def _close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            log.info("long-polling transport closed: %s", reason)
        self._incoming_send.close()
        self._outgoing_send.close()
        self._session_ready.set()

    _cursor_after_handshake: int = 0


@asynccontextmanager
async def open_long_polling_transport(
    base_url: str,
    *,
    connect_timeout: float = 10.0,
    poll_interval: float = 0.25,
) -> AsyncIterator[Transport]:
    """Open a long-polling connection to the server at ``base_url`` (``http(s)://host:port``).

    Args:
        base_url: The server's HTTP address.
        connect_timeout: Seconds allowed to connect and for each non-poll request.
        poll_interval: Pause after an empty poll, seconds.

    Raises:
        TransportClosed: The server is not reachable.
    """
    timeout = httpx.Timeout(connect_timeout)
    async with httpx.AsyncClient(timeout=timeout) as client:
        transport = LongPollingTransport(client, base_url, poll_interval=poll_interval)
        await transport.check_server()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run_sender)
            nursery.start_soon(transport.run_poller)
            try:
                yield transport
            finally:
                await transport.aclose()
                nursery.cancel_scope.cancel()
