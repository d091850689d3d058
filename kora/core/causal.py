"""Causal (topological) order of a set of operations (spec 4.6)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from kora.core.errors import CausalCycleError
from kora.core.hlc import utf16_key
from kora.core.operation import Operation

__all__ = ["causal_order"]

_HeapKey = tuple[int, int, bytes, str]


def _key(op: Operation) -> _HeapKey:
    ts = op.timestamp
    return (ts.wall_time, ts.logical, utf16_key(ts.node_id), op.id)


def causal_order(ops: Iterable[Operation]) -> list[Operation]:
    """Sort operations so that every dependency comes before its dependents.

    Kahn's algorithm as in the reference: only edges between operations of the input count
    (a dependency outside the set is ignored), and among the operations that are ready the
    one with the smallest HLC timestamp goes first.  Unlike the reference, equal timestamps
    are ordered by id, so every input order gives the same output.

    Args:
        ops: Operations in any order; repeated ids collapse into one (the first seen).

    Returns:
        A new list in causal order.  O((n + e) log n) for n operations and e dependencies.

    Raises:
        CausalCycleError: If the dependencies among the operations form a cycle.
    """
    by_id: dict[str, Operation] = {}
    for op in ops:
        by_id.setdefault(op.id, op)
    if len(by_id) <= 1:
        return list(by_id.values())

    waiting_on: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    for op_id, op in by_id.items():
        # A self-dependency cannot be satisfied by anything else; the reference ignores it
        # for a lone op and calls it a cycle otherwise.  We ignore it always, so the answer
        # does not depend on what else is in the set.
        deps = {dep for dep in op.causal_deps if dep in by_id and dep != op_id}
        waiting_on[op_id] = len(deps)
        for dep in deps:
            dependents.setdefault(dep, []).append(op_id)

    ready: list[tuple[_HeapKey, Operation]] = [
        (_key(op), op) for op_id, op in by_id.items() if waiting_on[op_id] == 0
    ]
    heapq.heapify(ready)
    ordered: list[Operation] = []
    while ready:
        _, op = heapq.heappop(ready)
        ordered.append(op)
        for dependent_id in dependents.get(op.id, ()):
            waiting_on[dependent_id] -= 1
            if waiting_on[dependent_id] == 0:
                dependent = by_id[dependent_id]
                heapq.heappush(ready, (_key(dependent), dependent))

    if len(ordered) != len(by_id):
        stuck = sorted(op_id for op_id, count in waiting_on.items() if count > 0)
        shown = ", ".join(stuck[:5]) + (", ..." if len(stuck) > 5 else "")
        raise CausalCycleError(
            f"causal dependencies form a cycle: ordered {len(ordered)} of {len(by_id)} "
            f"operations; stuck: {shown}"
        )
    return ordered
