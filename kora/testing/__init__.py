"""Test tooling for apps built on Kora: fixtures, chaos transport, partitions, fault proxy.

* :func:`open_loop_server` / :class:`LoopServer`: the real server sessions inside the test's
  trio loop, over memory connections (works under ``autojump_clock``);
* :class:`ChaosConfig` and :func:`chaos_transport`: drop, duplicate, reorder, delay and
  close frames around any transport, seeded;
* :class:`NetworkLink` and :func:`partition`: cut apps off from the server and heal them;
* :func:`open_fault_proxy`: a TCP proxy on 127.0.0.1 with resets, blackholes, latency and
  one-byte segments, for tests over real sockets;
* ``kora.testing.replicas``: canonical dumps and op-id sets for convergence checks.

The pytest fixtures (``kora_server``, ``kora_loop_server``, ``kora_app``...) are registered
by the ``kora.testing.plugin`` entry point; see docs/testing.md.
"""

from kora.testing.chaos import ChaosConfig, ChaosStats, ChaosTransport, Direction, chaos_transport
from kora.testing.fault_proxy import FaultProxy, open_fault_proxy
from kora.testing.loop_server import LoopServer, loop_clock_ms, open_loop_server
from kora.testing.network import NetworkLink, partition

__all__ = [
    "ChaosConfig",
    "ChaosStats",
    "ChaosTransport",
    "Direction",
    "FaultProxy",
    "LoopServer",
    "NetworkLink",
    "chaos_transport",
    "loop_clock_ms",
    "open_fault_proxy",
    "open_loop_server",
    "partition",
]
