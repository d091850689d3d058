"""The client sync engine: supervised actors, transports, status, events.

Enable it with ``kora.open_app(schema, path, sync=kora.SyncOptions(url=...))`` and drive it
through ``app.sync`` (:class:`SyncEngine`).  See docs/sync.md.
"""

from kora.sync.backoff import ReconnectBackoff as ReconnectBackoff
from kora.sync.diagnostics import Diagnostics as Diagnostics
from kora.sync.engine import SyncEngine as SyncEngine
from kora.sync.engine import open_sync as open_sync
from kora.sync.errors import AuthFailedError as AuthFailedError
from kora.sync.errors import SchemaMismatchError as SchemaMismatchError
from kora.sync.errors import SyncFailedError as SyncFailedError
from kora.sync.errors import TransportClosed as TransportClosed
from kora.sync.memory import MemoryNetwork as MemoryNetwork
from kora.sync.memory import MemoryTransport as MemoryTransport
from kora.sync.memory import memory_transport_pair as memory_transport_pair
from kora.sync.options import SyncOptions as SyncOptions
from kora.sync.scope import OUT_OF_SCOPE as OUT_OF_SCOPE
from kora.sync.status import StatusSnapshot as StatusSnapshot
from kora.sync.status import SyncStatus as SyncStatus
from kora.sync.transport import Frame as Frame
from kora.sync.transport import Transport as Transport
from kora.sync.transport import TransportFactory as TransportFactory

__all__ = [
    "OUT_OF_SCOPE",
    "AuthFailedError",
    "Diagnostics",
    "Frame",
    "MemoryNetwork",
    "MemoryTransport",
    "ReconnectBackoff",
    "SchemaMismatchError",
    "StatusSnapshot",
    "SyncEngine",
    "SyncFailedError",
    "SyncOptions",
    "SyncStatus",
    "Transport",
    "TransportClosed",
    "TransportFactory",
    "memory_transport_pair",
    "open_sync",
]
