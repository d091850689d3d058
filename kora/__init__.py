"""Kora for Python: an offline-first sync runtime on trio that speaks the Kora sync protocol."""

from kora.core.errors import KoraError, LocalError, RemoteError

__version__ = "0.1.0"

__all__ = ["KoraError", "LocalError", "RemoteError", "__version__"]
