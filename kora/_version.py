"""The distribution's version, in a module of its own.

Lower layers (``kora.server``, ``kora.sync`` ...) that need the version import it from here:
importing the root package ``kora`` would make them depend on ``kora.app`` (the layers
contract forbids that).
"""

__version__ = "0.1.0"
