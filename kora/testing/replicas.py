"""What replicas hold, in comparable form: canonical dumps, op-id sets, digests.

Convergence is checked on *bytes*: ``canonical_dump`` sorts collections, records and keys
and serializes with ``kora.core.canonical.canonical_json``, so two replicas converged exactly
when their dumps (or their SHA-256 ``digest``) are equal.  A record's dump holds its fields,
its tombstone flag and the HLC of each field's writer, so two replicas that agree on
values by accident but not on who wrote them still differ.

Client replicas are ``kora.store.Store`` objects (``app_store(app)`` gives an app's); the
server is a ``kora.server.ServerStore``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from kora.app import App
from kora.core.canonical import canonical_json
from kora.core.operation import Operation
from kora.server.stores.base import ServerStore
from kora.store import Store

__all__ = [
    "Dump",
    "app_store",
    "canonical_dump",
    "digest",
    "server_dump",
    "server_operations",
    "store_dump",
    "store_operations",
]

#: ``{collection: {record_id: {"fields", "deleted", "versions"}}}``.
Dump = dict[str, dict[str, dict[str, Any]]]


def app_store(app: App) -> Store:
    """The local store under an app (test tooling reads it directly)."""
    return app._store  # the app exposes no store on purpose; tests need the replica


def _entry(fields: Mapping[str, Any], deleted: bool, versions: Mapping[str, str]) -> dict[str, Any]:
    return {"fields": dict(fields), "deleted": bool(deleted), "versions": dict(versions)}


async def store_dump(store: Store, collections: Iterable[str]) -> Dump:
    """Every record of ``collections`` in a client store, tombstones included."""
    dump: Dump = {}
    for collection in sorted(collections):
        records = await store.query(collection, include_deleted=True)
        if records:
            dump[collection] = {
                r.id: _entry(r.fields, r.deleted, r.field_versions) for r in records
            }
    return dump


async def store_operations(store: Store) -> list[Operation]:
    """Every operation in a client store's log (per node, by sequence number)."""
    vector = await store.version_vector()
    ops: list[Operation] = []
    for node, top in sorted(vector.to_wire().items()):
        ops.extend(await store.operations_in_range(node, 1, top))
    return ops


async def server_operations(store: ServerStore) -> list[Operation]:
    """Every operation in the server's log, in delivery order."""
    ops: list[Operation] = []
    after = 0
    while True:
        page = await store.operations_after_delivery(after, 1000)
        if not page:
            return ops
        ops.extend(d.operation for d in page)
        after = page[-1].delivery_sequence


async def server_dump(store: ServerStore, collections: Iterable[str] | None = None) -> Dump:
    """The server's materialized records (of ``collections``, or all), tombstones included."""
    wanted = set(collections) if collections is not None else None
    keys = sorted(
        {
            (op.collection, op.record_id)
            for op in await server_operations(store)
            if wanted is None or op.collection in wanted
        }
    )
    dump: Dump = {}
    for collection, record_id in keys:
        record = await store.find_record(collection, record_id)
        if record is not None:
            dump.setdefault(collection, {})[record_id] = _entry(
                record.fields, record.deleted, record.field_versions
            )
    return dump


def canonical_dump(dump: Dump) -> bytes:
    """The dump as canonical JSON bytes (sorted keys): equal bytes, equal replicas."""
    return canonical_json(dump).encode("utf-8")


def digest(dump: Dump) -> str:
    """SHA-256 of ``canonical_dump``."""
    return hashlib.sha256(canonical_dump(dump)).hexdigest()
