"""The relay floor's server: a bare trio-websocket server that forwards every message it gets
from one connection to every other connection, unchanged.

Run as a child process: ``python -m bench.driver.relay --port N``.  It is what a sync
server on this machine costs at the very least (accept, read a frame, write it to the other
sockets), with no decoding, storage or bookkeeping.

With ``--durable FILE`` it first commits each message to a SQLite file (WAL,
``synchronous=FULL``, the server store's pragmas; a JSON array as one row per element) and
forwards it after the commit: the least a server that acknowledges and relays only what
survives a power loss must do per message.
"""

from __future__ import annotations

import argparse
import json
import sqlite3

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

_MAX_MESSAGE = 64 * 1024 * 1024


def open_durable_log(path: str) -> sqlite3.Connection:
    """A one-table SQLite file with the stores' durability pragmas, committed per message."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    return conn


def commit_message(conn: sqlite3.Connection, message: str | bytes) -> None:
    """One durable transaction: a JSON array message is one row per element (a batch of
    operations), anything else one row."""
    text = message if isinstance(message, str) else message.decode("utf-8", "replace")
    bodies = [text]
    if text.startswith("["):
        bodies = [json.dumps(item, separators=(",", ":")) for item in json.loads(text)]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO log (body) VALUES (?)", [(body,) for body in bodies])
    conn.execute("COMMIT")


async def serve_relay(port: int, durable: str | None = None) -> None:
    peers: set[WebSocketConnection] = set()
    # Committed inline on the event loop: the floor is one message at a time, and a thread
    # hop would only add to it.
    log = open_durable_log(durable) if durable is not None else None

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        peers.add(ws)
        try:
            while True:
                message = await ws.get_message()
                if log is not None:
                    commit_message(log, message)
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
    parser.add_argument("--durable", help="commit each message to this SQLite file first")
    args = parser.parse_args()
    trio.run(serve_relay, args.port, args.durable)


if __name__ == "__main__":
    main()
