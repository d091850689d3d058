"""The ``kora`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kora._version import __version__

#: Where ``kora serve`` keeps its SQLite database unless told otherwise.
DEFAULT_DB = "kora-data/server.db"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kora",
        description="Kora for Python: offline-first sync runtime and server.",
    )
    parser.add_argument("--version", action="version", version=f"kora {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the sync server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port to bind (default 8787)")
    store = serve.add_mutually_exclusive_group()
    store.add_argument("--db", metavar="PATH", help=f"SQLite database file (default {DEFAULT_DB})")
    store.add_argument("--postgres", metavar="DSN", help="PostgreSQL connection string")
    serve.add_argument(
        "--postgres-schema",
        metavar="NAME",
        help="keep the PostgreSQL tables in this schema (default: the search_path's)",
    )
    serve.add_argument("--schema", metavar="MODULE:ATTR", help="schema to validate against")
    serve.add_argument("--tokens", metavar="FILE", help="token file for token auth")
    serve.add_argument("--log-json", action="store_true", help="structured logs as JSON lines")

    commands.add_parser("demo", help="a server and two apps syncing in one terminal")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "serve":
        # Imported here: the server stack is heavy and other commands do not need it.
        from kora.server.cli import run_serve

        return run_serve(args)
    if args.command == "demo":
        import trio

        trio.run(_demo)
        return 0
    print(f"kora {args.command}: not available yet in this version", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------ kora demo


async def _demo() -> None:
    """A server and two apps in one terminal: a write, an offline period, the catch-up."""
    import trio

    import kora
    from kora.server import MemoryServerStore, open_server

    schema = kora.define_schema(version=1, collections={"todos": {"title": kora.string()}})

    def say(text: str) -> None:
        print(f"\n== {text}", flush=True)

    async def titles(app: kora.App) -> list[str]:
        return sorted(str(todo.fields["title"]) for todo in await app.todos.all())

    async def until(app: kora.App, expected: list[str]) -> None:
        with trio.fail_after(20):
            async with app.todos.where().watch() as results:
                async for records in results:
                    if sorted(str(r.fields["title"]) for r in records) == sorted(expected):
                        return

    async def until_offline(app: kora.App) -> None:
        assert app.sync is not None
        with trio.fail_after(20):
            async with app.sync.watch_status() as statuses:
                async for info in statuses:
                    if info.status == "offline":
                        return

    async def status_line(name: str, app: kora.App) -> None:
        assert app.sync is not None
        shown = None
        async with app.sync.watch_status() as statuses:
            async for info in statuses:
                line = f"   [{name}] {info.status.value:<9} pending={info.pending_operations}"
                if line != shown:
                    print(line, flush=True)
                    shown = line

    async with MemoryServerStore() as store, open_server(store=store, port=0) as server:
        port = server.port
        options = kora.SyncOptions(
            url=server.url, reconnect_interval=0.25, max_reconnect_interval=1.0
        )
        say(f"server on {server.url}; two apps, A and B, connect")
        async with (
            kora.open_app(schema, path=None, sync=options) as a,
            kora.open_app(schema, path=None, sync=options) as b,
            trio.open_nursery() as nursery,
        ):
            assert a.sync is not None
            assert b.sync is not None
            nursery.start_soon(status_line, "A", a)
            nursery.start_soon(status_line, "B", b)
            await a.sync.connect()
            await b.sync.connect()
            with trio.fail_after(20):
                await a.sync.wait_synced()
                await b.sync.wait_synced()
            say('A writes "buy milk"')
            await a.todos.insert({"title": "buy milk"})
            await until(b, ["buy milk"])
            print(f"   B sees {await titles(b)}", flush=True)

            say("the server goes down; A keeps writing offline")
            server.shutdown()
            await until_offline(a)
            await until_offline(b)
            await a.todos.insert({"title": "walk the dog"})
            await a.todos.insert({"title": "call mum"})
            print(f"   A has {a.sync.pending_operations} operations queued", flush=True)

            say("the server comes back on the same port: catch-up")
            async with open_server(store=store, port=port):
                await until(b, ["buy milk", "walk the dog", "call mum"])
                with trio.fail_after(20):
                    await a.sync.wait_synced()
                    await b.sync.wait_synced()
                print(f"   B sees {await titles(b)}", flush=True)
                figures = await a.sync.diagnostics()
                say(
                    f"A: {figures.operations_sent} ops sent, rtt p95 "
                    f"{figures.rtt_p95_ms:.1f} ms, {figures.reconnects} reconnect(s)"
                )
                nursery.cancel_scope.cancel()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
