"""Version vectors: per node, the highest sequence number seen (spec 4.1).

The maximum is not a contiguous frontier: operations delivered out of order or filtered by
scope can leave holes below it that a version vector cannot express (that is what the
server's delivery watermark is for).  A node that is absent has sequence 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from kora.core.causal import causal_order
from kora.core.errors import ValidationError
from kora.core.operation import Operation

__all__ = ["FetchRange", "VersionVector", "compute_delta"]

#: ``fetch_range(node_id, first, last)``: our operations of that node, sequence numbers
#: ``first..last`` inclusive.
FetchRange = Callable[[str, int, int], Iterable[Operation]]


def _frozen_entries(entries: Mapping[str, int] | None) -> Mapping[str, int]:
    clean: dict[str, int] = {}
    for node, seq in (entries or {}).items():
        _check(node, seq)
        if seq > 0:  # 0 is the same as absent; dropping it keeps equality simple
            clean[node] = seq
    return MappingProxyType(clean)


def _check(node: object, seq: object) -> None:
    if not isinstance(node, str):
        raise ValidationError(f"version vector node id must be a string, got {node!r}")
    if type(seq) is not int or seq < 0:
        raise ValidationError(
            f"version vector entry for {node!r} must be a non-negative integer, got {seq!r}"
        )


@attrs.frozen(eq=False)
class VersionVector:
    """An immutable map ``node id -> highest sequence number`` (absent means 0).

    Supports ``len``, iteration over node ids, ``in`` and ``items()``; two vectors are equal
    when every node has the same sequence (zero entries do not count).
    """

    entries: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen_entries)

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> VersionVector:
        """From the JSON object ``{nodeId: int}``.

        Raises:
            ValidationError: If a key is not a string or a value not a non-negative integer.
        """
        if not isinstance(wire, Mapping):
            raise ValidationError(f"version vector must be an object, got {type(wire).__name__}")
        return cls(wire)

    def to_wire(self) -> dict[str, int]:
        """The JSON object ``{nodeId: int}`` (a fresh dict)."""
        return dict(self.entries)

    def get(self, node_id: str) -> int:
        """The highest sequence number seen from ``node_id`` (0 if none)."""
        return self.entries.get(node_id, 0)

    def with_sequence(self, node_id: str, sequence: int) -> VersionVector:
        """A vector that has also seen ``sequence`` from ``node_id`` (never lowers it)."""
        _check(node_id, sequence)
        if sequence <= self.get(node_id):
            return self
        return VersionVector({**self.entries, node_id: sequence})

    def merge(self, other: VersionVector) -> VersionVector:
        """The per-node maximum of both vectors."""
        merged = dict(self.entries)
        for node, seq in other.entries.items():
            if seq > merged.get(node, 0):
                merged[node] = seq
        return VersionVector(merged)

    def dominates(self, other: VersionVector) -> bool:
        """Whether this vector has seen everything ``other`` has (``>=`` on every node)."""
        return all(self.get(node) >= seq for node, seq in other.entries.items())

    def missing_ranges(self, remote: VersionVector) -> dict[str, tuple[int, int]]:
        """What ``remote`` lacks: for each node where we are ahead, ``(remote + 1, ours)``.

        Both ends are inclusive sequence numbers.
        """
        return {
            node: (remote.get(node) + 1, seq)
            for node, seq in self.entries.items()
            if seq > remote.get(node)
        }

    @staticmethod
    def compute_delta(
        local: VersionVector, remote: VersionVector, fetch_range: FetchRange
    ) -> list[Operation]:
        """Same as the module-level ``compute_delta``."""
        return compute_delta(local, remote, fetch_range)

    def items(self) -> Iterable[tuple[str, int]]:
        return self.entries.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return NotImplemented
        return dict(self.entries) == dict(other.entries)

    def __hash__(self) -> int:
        return hash(frozenset(self.entries.items()))

    def __repr__(self) -> str:
        return f"VersionVector({dict(self.entries)!r})"


def compute_delta(
    local: VersionVector, remote: VersionVector, fetch_range: FetchRange
) -> list[Operation]:
    """The operations ``local`` has and ``remote`` lacks, in causal order.

    Args:
        local: Our version vector.
        remote: The peer's version vector.
        fetch_range: ``fetch_range(node_id, first, last)`` returns our operations of that
            node with sequence numbers ``first..last`` inclusive (holes are fine).

    Returns:
        The operations sorted by ``causal_order`` (duplicates collapse).

    Raises:
        CausalCycleError: If their dependencies form a cycle.
    """
    missing: list[Operation] = []
    for node, (first, last) in local.missing_ranges(remote).items():
        missing.extend(fetch_range(node, first, last))
    return causal_order(missing)
