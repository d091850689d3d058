"""``WebSocketTransport`` against a wsproto server over an in-memory stream (virtual time).

The close tests are the point of owning the reader: ``aclose()`` reads the server's close
reply itself, so closing a connected transport takes no virtual time at all, where waiting
for a reply that nobody reads would take the whole ``close_timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from actors import Mailbox
from kora.sync.connection import ConnectionActor
from kora.sync.diagnostics import FrameReceived, FrameSent, MetricMessage
from kora.sync.errors import ConnectionEnded, TransportClosed
from kora.sync.transport import Frame, Transport
from kora.sync.websocket import DISCONNECT_TIMEOUT, WebSocketTransport


class FakeServer:
    """The server end: a wsproto server connection over one memory stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.events: deque[Event] = deque()
        self.request: Request | None = None

    async def next_event(self) -> Event | None:
        while not self.events:
            data = await self.stream.receive_some(65536)
            if not data:
                return None  # the client closed the stream
            self.ws.receive_data(bytes(data))
            self.events.extend(self.ws.events())
        return self.events.popleft()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def accept(self) -> None:
        request = await self.next_event()
        assert isinstance(request, Request)
        self.request = request
        await self.send(AcceptConnection())

    async def close_code(self, *, answer: bool = True) -> int | None:
        """Read until the client's close frame; answer it; its code (None: stream ended)."""
        while True:
            event = await self.next_event()
            if event is None:
                return None
            if isinstance(event, CloseConnection):
                if answer:
                    await self.send(event.response())
                return event.code


@asynccontextmanager
async def connected(
    *, max_message_size: int = 1 << 20
) -> AsyncIterator[tuple[WebSocketTransport, FakeServer]]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = FakeServer(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept)
        transport = await WebSocketTransport.handshake(
            client_stream, host="example.test", target="/sync", max_message_size=max_message_size
        )
    yield transport, server


async def test_frames_travel_both_ways_and_pings_are_answered(autojump_clock: object) -> None:
    async with connected() as (transport, server):
        assert server.request is not None
        assert server.request.host == "example.test"
        assert server.request.target == "/sync"
        await transport.send('{"type":"ping"}')
        await transport.send(b"\x01\x02")
        first, second = await server.next_event(), await server.next_event()
        assert isinstance(first, TextMessage)
        assert first.data == '{"type":"ping"}'
        assert isinstance(second, BytesMessage)
        assert bytes(second.data) == b"\x01\x02"

        await server.send(Ping(b"hi"))
        await server.send(TextMessage("part one, ", message_finished=False))
        await server.send(TextMessage("part two"))
        await server.send(BytesMessage(b"\x03"))
        assert await transport.receive() == "part one, part two"
        assert await transport.receive() == b"\x03"
        pong = await server.next_event()
        assert isinstance(pong, Pong)
        assert bytes(pong.payload) == b"hi"
        await transport.aclose()


async def test_close_completes_the_handshake_without_waiting(autojump_clock: object) -> None:
    async with connected() as (transport, server):
        async with trio.open_nursery() as nursery:
            codes: list[int | None] = []

            async def serve() -> None:
                codes.append(await server.close_code())

            nursery.start_soon(serve)
            start = trio.current_time()
            await transport.aclose()
            assert trio.current_time() - start < DISCONNECT_TIMEOUT / 10
        assert codes == [1000]
        assert transport._ws.state is ConnectionState.CLOSED
        with pytest.raises(TransportClosed):
            await transport.send("late")
        await transport.aclose()  # idempotent


async def test_close_of_a_silent_server_is_bounded(autojump_clock: object) -> None:
    async with connected() as (transport, server):
        start = trio.current_time()
        with trio.CancelScope() as scope:
            scope.cancel()  # closing works in a cancelled scope too
            await transport.aclose()
        assert trio.current_time() - start == pytest.approx(DISCONNECT_TIMEOUT)
        assert await server.close_code(answer=False) == 1000
        assert await server.next_event() is None  # the stream is closed


@pytest.mark.parametrize(
    ("close", "reason"),
    [
        (CloseConnection(4000, "bye"), "bye"),
        (CloseConnection(4001), "WebSocket closed with code 4001"),
        (None, "WebSocket closed with code 1006"),
    ],
)
async def test_the_server_closing_ends_receive_after_the_buffered_frames(
    autojump_clock: object, close: CloseConnection | None, reason: str
) -> None:
    async with connected() as (transport, server):
        await server.send(TextMessage("last"))
        if close is None:
            await server.stream.aclose()
        else:
            await server.send(close)
        assert await transport.receive() == "last"
        with pytest.raises(TransportClosed, match=reason):
            await transport.receive()
        with pytest.raises(TransportClosed, match=reason):
            await transport.send("after")
        if close is not None:
            reply = await server.next_event()
            assert isinstance(reply, CloseConnection)
            assert reply.code == close.code
        await transport.aclose()


async def test_a_message_over_the_limit_closes_with_1009(autojump_clock: object) -> None:
    async with connected(max_message_size=10) as (transport, server):
        await server.send(TextMessage("x" * 6, message_finished=False))
        await server.send(TextMessage("y" * 6))
        with pytest.raises(TransportClosed, match="maximum message size"):
            await transport.receive()
        assert await server.close_code() == 1009
        await transport.aclose()


async def test_a_rejected_upgrade_is_a_transport_error(autojump_clock: object) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = FakeServer(server_stream)

    async def refuse() -> None:
        assert isinstance(await server.next_event(), Request)
        await server.send(RejectConnection(status_code=403))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refuse)
        with pytest.raises(TransportClosed, match=r"handshake failed.*403"):
            await WebSocketTransport.handshake(client_stream, host="h", target="/")


async def test_stopping_a_connection_actor_closes_its_websocket_at_once(
    autojump_clock: object,
) -> None:
    """A disconnect cancels the connection actor; its WebSocket still gets the close
    handshake, answered and read within the same instant of virtual time."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = FakeServer(server_stream)
    codes: list[int | None] = []

    @asynccontextmanager
    async def factory() -> AsyncIterator[Transport]:
        transport = await WebSocketTransport.handshake(client_stream, host="h", target="/")
        try:
            yield transport
        finally:
            await transport.aclose()

    got: list[Event | None] = []
    got_one = trio.Event()

    async def serve() -> None:
        await server.accept()
        await server.send(TextMessage("hello"))
        got.append(await server.next_event())
        got_one.set()
        codes.append(await server.close_code())

    with (
        Mailbox[Frame](4) as frames_out,
        Mailbox[Frame](4) as frames_in,
        Mailbox[MetricMessage](16) as metrics,
    ):
        inbound = frames_in.receiver()
        metric_events = metrics.receiver()
        actor = ConnectionActor(
            factory=factory,
            frames_out=frames_out.receiver(),
            frames_in=frames_in.sender(),
            metrics=metrics.sender(),
        )
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await actor.run()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(run)
            assert await inbound.receive() == "hello"
            with frames_out.sender() as outgoing:
                await outgoing.send("from the client")
            await got_one.wait()
            (event,) = got
            assert isinstance(event, TextMessage)
            assert event.data == "from the client"
            start = trio.current_time()
            scope.cancel()
        assert trio.current_time() == start  # no timeout was waited for
        assert codes == [1000]
        counted = []
        while True:
            try:
                counted.append(metric_events.receive_nowait())
            except trio.WouldBlock:
                break
        assert FrameReceived(5) in counted
        assert FrameSent(15) in counted


async def test_connection_actor_reports_the_servers_close_reason(autojump_clock: object) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = FakeServer(server_stream)

    @asynccontextmanager
    async def factory() -> AsyncIterator[Transport]:
        transport = await WebSocketTransport.handshake(client_stream, host="h", target="/")
        try:
            yield transport
        finally:
            await transport.aclose()

    async def serve() -> None:
        await server.accept()
        await server.send(CloseConnection(4002, "server restarting"))
        await server.next_event()

    with (
        Mailbox[Frame](4) as frames_out,
        Mailbox[Frame](4) as frames_in,
        Mailbox[MetricMessage](16) as metrics,
    ):
        actor = ConnectionActor(
            factory=factory,
            frames_out=frames_out.receiver(),
            frames_in=frames_in.sender(),
            metrics=metrics.sender(),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with pytest.raises(ConnectionEnded, match="server restarting"):
                await actor.run()


def _self_signed(host: str) -> tuple[bytes, bytes]:
    """A certificate for ``host`` and its key, PEM (made with ``cryptography``)."""
    pytest.importorskip("cryptography")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


async def test_wss_over_real_tls_on_loopback(tmp_path: object) -> None:
    """``wss://`` end to end on a real socket: TLS, the handshake, a frame each way and the
    close handshake (``open_websocket_transport`` itself, not a stream we made)."""
    import functools
    import ssl
    from pathlib import Path

    from kora.sync.websocket import open_websocket_transport

    cert, key = _self_signed("localhost")
    directory = Path(str(tmp_path))
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client_context = ssl.create_default_context(cadata=cert.decode())
    codes: list[int | None] = []
    served = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        server = FakeServer(trio.SSLStream(stream, server_context, server_side=True))
        await server.accept()
        event = await server.next_event()
        assert isinstance(event, TextMessage)
        await server.send(TextMessage(f"echo {event.data}"))
        codes.append(await server.close_code())
        await server.stream.aclose()
        served.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
            (listener,) = await nursery.start(serve)
            port = listener.socket.getsockname()[1]
            url = f"wss://localhost:{port}/sync?x=1"
            async with open_websocket_transport(url, ssl_context=client_context) as transport:
                await transport.send("hello")
                assert await transport.receive() == "echo hello"
            await served.wait()
            nursery.cancel_scope.cancel()
    assert codes == [1000]
