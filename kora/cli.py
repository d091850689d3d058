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
    # The server and the sync engine land in later issues; say so instead of pretending.
    print(f"kora {args.command}: not available yet in this version", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
