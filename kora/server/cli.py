"""``kora serve``: run the sync server from the command line until Ctrl-C or SIGTERM.

The first signal starts a graceful shutdown (sessions finish their batch and close with
1001); a second one stops at once.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio

from kora.core.errors import KoraError
from kora.core.operation import Operation
from kora.server.auth import AuthProvider, TokenFileAuthProvider
from kora.server.context import OperationSchema
from kora.server.logs import configure_logging, fields, get_logger
from kora.server.server import SyncServer, serve
from kora.server.stores.base import ServerStore
from kora.server.stores.postgres import PostgresServerStore
from kora.server.stores.sqlite import SqliteServerStore

__all__ = ["load_schema", "run_serve"]

log = get_logger(__name__)

DEFAULT_DB = "kora-data/server.db"


class CommandLineError(KoraError):
    """A ``kora serve`` option is wrong (printed, exit status 2)."""


class _VersionOnlySchema:
    """A schema object without ``validate_operation``: its version is used, nothing checked."""

    def __init__(self, version: int) -> None:
        self._version = version

    @property
    def version(self) -> int:
        return self._version

    def validate_operation(self, op: Operation) -> None:
        return None


def load_schema(spec: str) -> OperationSchema:
    """Import ``module:attr`` and return it as the server's schema.

    Raises:
        CommandLineError: Not importable, or it has no integer ``version``.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandLineError(f"--schema wants MODULE:ATTR, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
        value: Any = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise CommandLineError(f"cannot load the schema {spec!r}: {exc}") from exc
    version = getattr(value, "version", None)
    if type(version) is not int or version < 1:
        raise CommandLineError(f"the schema {spec!r} has no positive integer 'version'")
    if callable(getattr(value, "validate_operation", None)):
        schema: OperationSchema = value
        return schema
    log.warning(
        "the schema has no validate_operation(op); only its version is enforced",
        extra=fields(schema=spec),
    )
    return _VersionOnlySchema(version)


def _store(args: argparse.Namespace) -> ServerStore:
    if args.postgres:
        return PostgresServerStore(args.postgres, schema=args.postgres_schema)
    if args.postgres_schema:
        raise CommandLineError("--postgres-schema needs --postgres")
    path = Path(args.db or DEFAULT_DB)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteServerStore(path)


async def _serve_until_signalled(
    store: ServerStore,
    *,
    host: str,
    port: int,
    auth: AuthProvider | None,
    schema: OperationSchema | None,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        first_signal = trio.Event()

        async def watch_signals(cancel_scope: trio.CancelScope) -> None:
            async for signum in signals:
                if not first_signal.is_set():
                    log.info(
                        "shutting down gracefully (signal again to stop at once)",
                        extra=fields(signal=signal.Signals(signum).name),
                    )
                    first_signal.set()
                else:
                    log.warning("stopping at once")
                    cancel_scope.cancel()

        async with store, trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals, nursery.cancel_scope)
            server: SyncServer = await nursery.start(
                partial(
                    serve,
                    store=store,
                    host=host,
                    port=port,
                    auth=auth,
                    schema=schema,
                    shutdown_trigger=first_signal.wait,
                )
            )
            print(f"kora sync server: connect to {server.url}", flush=True)
            await server.wait_stopped()
            nursery.cancel_scope.cancel()


#: Allocations between two young-generation collections of ``kora serve`` (Python: 700).
SERVE_GC_THRESHOLDS: Final = (20_000, 20, 10)


def tune_collector() -> None:
    """Make the cyclic garbage collector cheaper for the server process.

    A server's event loop allocates and frees many short-lived objects per frame (tasks'
    wake-ups, cancel scopes, messages).  With Python's default threshold of 700, one commit
    relayed to 200 sessions ran a young-generation collection every few sessions, which
    also walks whatever lives longer (every session's objects): about a sixth of the
    server's CPU.  A higher threshold collects as much garbage in far fewer passes, and
    ``gc.freeze`` moves what was loaded at start-up (modules, the store) out of every later
    full collection.  Only ``kora serve`` does this: an app embedding ``open_server`` keeps
    its own collector settings.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVE_GC_THRESHOLDS)


def run_serve(args: argparse.Namespace) -> int:
    """The ``kora serve`` command (arguments parsed by ``kora.cli``); returns the exit status."""
    configure_logging(json_lines=args.log_json, level=logging.INFO)
    try:
        store = _store(args)
        auth = TokenFileAuthProvider.from_file(args.tokens) if args.tokens else None
        schema = load_schema(args.schema) if args.schema else None
    except (KoraError, ValueError, OSError) as exc:
        print(f"kora serve: {exc}", file=sys.stderr)
        return 2
    tune_collector()
    status = 0
    try:
        trio.run(
            partial(
                _serve_until_signalled,
                store,
                host=args.host,
                port=args.port,
                auth=auth,
                schema=schema,
            )
        )
    except* OSError as group:  # typically: the port is taken
        print(f"kora serve: {_first(group)}", file=sys.stderr)
        status = 1
    except* KoraError as group:  # for example: the database cannot be opened
        print(f"kora serve: {_first(group)}", file=sys.stderr)
        status = 1
    return status


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
