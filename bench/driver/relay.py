"""The relay floor's server: a bare trio-websocket server that forwards every message it gets
from one connection to every other connection, unchanged.

Run as a child process: ``python -m bench.driver.relay --port N``.  It is what a sync
server on this machine costs at the very least (accept, read a frame, write it to the other
sockets), with no decoding, storage or bookkeeping.
"""

from __future__ import annotations

import argparse

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

_MAX_MESSAGE = 64 * 1024 * 1024


async def serve_relay(port: int) -> None:
    peers: set[WebSocketConnection] = set()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        peers.add(ws)
        try:
            while True:
                message = await ws.get_message()
                for other in list(peers):
                    if other is not ws:
                        try:
                            await other.send_message(message)
                        except ConnectionClosed:
                            peers.discard(other)
        except ConnectionClosed:
            pass
        finally:
            peers.discard(ws)

    await serve_websocket(handler, "127.0.0.1", port, None, max_message_size=_MAX_MESSAGE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    trio.run(serve_relay, parser.parse_args().port)


if __name__ == "__main__":
    main()
