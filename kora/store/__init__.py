"""The local store: the ``Store`` interface, ``SQLiteStore`` (default) and ``MemoryStore``."""
