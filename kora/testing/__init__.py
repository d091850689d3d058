"""Test tooling for apps built on Kora: fixtures, chaos transport, partitions, fault proxy.

* :func:`open_loop_server` / :class:`LoopServer`: the real server sessions inside the test's
  trio loop, over memory connections (works under ``autojump_clock``);
* :class:`ChaosConfig` and :func:`chaos_transport`: drop, duplicate, reorder, delay and
  close frames around any transport, seeded;
* :class:`NetworkLink` and :func:`partition`: cut apps off from the server and heal them;
* :func:`open_test_app` and :func:`wait_converged`: apps wired to a test server;
* :func:`open_fault_proxy`: a TCP proxy on 127.0.0.1 with resets, blackholes, latency and
  one-byte segments, for tests over real sockets;
* ``kora.testing.replicas``: canonical dumps and op-id sets for convergence checks.

The pytest fixtures (``kora_server``, ``kora_loop_server``, ``kora_app``...) are registered
by the ``kora.testing.plugin`` entry point; see docs/testing.md.  Names are imported lazily,
so that loading the plugin (which imports this package) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kora.testing.apps import open_test_app, wait_converged
    from kora.testing.chaos import (
        ChaosConfig,
        ChaosStats,
        ChaosTransport,
        Direction,
        chaos_transport,
        frame_message,
    )
    from kora.testing.fault_proxy import FaultProxy, open_fault_proxy
    from kora.testing.loop_server import LoopServer, loop_clock_ms, open_loop_server
    from kora.testing.network import NetworkLink, link_of, partition

_EXPORTS = {
    "open_test_app": "kora.testing.apps",
    "wait_converged": "kora.testing.apps",
    "ChaosConfig": "kora.testing.chaos",
    "ChaosStats": "kora.testing.chaos",
    "ChaosTransport": "kora.testing.chaos",
    "Direction": "kora.testing.chaos",
    "chaos_transport": "kora.testing.chaos",
    "frame_message": "kora.testing.chaos",
    "FaultProxy": "kora.testing.fault_proxy",
    "open_fault_proxy": "kora.testing.fault_proxy",
    "LoopServer": "kora.testing.loop_server",
    "loop_clock_ms": "kora.testing.loop_server",
    "open_loop_server": "kora.testing.loop_server",
    "NetworkLink": "kora.testing.network",
    "link_of": "kora.testing.network",
    "partition": "kora.testing.network",
}

__all__ = [
    "ChaosConfig",
    "ChaosStats",
    "ChaosTransport",
    "Direction",
    "FaultProxy",
    "LoopServer",
    "NetworkLink",
    "chaos_transport",
    "frame_message",
    "link_of",
    "loop_clock_ms",
    "open_fault_proxy",
    "open_loop_server",
    "open_test_app",
    "partition",
    "wait_converged",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kora.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
