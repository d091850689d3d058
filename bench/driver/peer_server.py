"""The peer's server in a child process: pycrdt-websocket's ASGIServer on hypercorn (trio).

Run: ``python -m bench.driver.peer_server --port N --init 10000,100000``.  Rooms
``/init<K>`` hold a document with K map entries, built server-side before it listens (as if
loaded from a store), like the peer bench this is taken from
(``bench/peers/pycrdt_bench.py`` of the shared material).
"""

from __future__ import annotations

import argparse

import anyio


async def serve_peer(port: int, init_sizes: list[int]) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from pycrdt import Doc, Map
    from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom

    ws_server = WebsocketServer(auto_clean_rooms=False)
    app = ASGIServer(ws_server)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.websocket_max_message_size = 64 * 1024 * 1024
    async with ws_server:
        for size in init_sizes:
            doc: Doc[Map[int]] = Doc()
            entries = doc.get("m", type=Map)
            with doc.transaction():
                for index in range(size):
                    entries[f"key{index}"] = index
            room = YRoom(ydoc=doc, ready=True)
            ws_server.rooms[f"/init{size}"] = room
            await ws_server.start_room(room)
        await serve(app, config)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--init", default="", help="comma-separated room sizes")
    args = parser.parse_args()
    sizes = [int(size) for size in args.init.split(",") if size]
    anyio.run(serve_peer, args.port, sizes, backend="trio")


if __name__ == "__main__":
    main()
