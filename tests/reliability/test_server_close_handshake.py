"""A session that the server ends must also end its TCP connection.

Regression test for a leak: when the server closed a session while the client still had
frames in flight (a pipelined flood, or frames sent before the handshake), hypercorn kept
pushing them into a queue nobody read once the ASGI app had returned.  Its reading loop then
blocked forever, so the client's close handshake never completed and the TCP connection
(with its tasks) stayed open on the server until the process ended.
"""

from __future__ import annotations

import trio
from abuse_harness import WAIT, abuse_env, batch, make_op, raw_client, raw_socket, ws_frame

from kora.server import ServerLimits


async def test_close_completes_while_the_client_has_frames_in_flight() -> None:
    limits = ServerLimits(ping_interval=None, shutdown_timeout=3.0, ops_per_minute=1, ops_burst=5)
    async with abuse_env(limits=limits) as env:
        ops = [make_op("eager", seq) for seq in range(1, 41)]
        with trio.fail_after(WAIT * 2):
            async with raw_client(env.url) as client:
                await client.connect("eager")
                for op in ops:  # pipelined: the server closes at the sixth (rate limit)
                    await client.ws.send_message(batch([op]))
                error, code = await client.expect_error_and_close()
            # Leaving ``raw_client`` waited for the server to end the TCP connection.
        assert error is not None
        assert error["code"] == "RATE_LIMIT"
        assert code == 4429
        assert await env.store.operation_count() == 5
        await env.assert_healthy()


async def test_server_ends_the_tcp_connection_after_closing_a_flooding_session() -> None:
    async with abuse_env() as env:
        port = env.server.port
        async with raw_socket(port) as sock:
            await sock.upgrade(port)
            frames = b"".join(
                ws_frame(0x1, batch([make_op("eager", seq)]).encode()) for seq in range(1, 41)
            )
            await sock.send(frames)
            assert await sock.close_code() == 1008
            # Answer the close as RFC 6455 asks; then the server must close the TCP connection.
            await sock.send(ws_frame(0x8, (1000).to_bytes(2, "big")))
            with trio.fail_after(WAIT):
                while await sock.stream.receive_some(65536):
                    pass
        await env.assert_healthy()
