"""Version vectors (spec 4.1) and deltas."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.core import HLCTimestamp, Operation, OpType, ValidationError
from kora.core.version_vector import VersionVector, compute_delta


def vv(**entries: int) -> VersionVector:
    return VersionVector(entries)


def test_get_defaults_to_zero_and_zero_entries_do_not_count() -> None:
    v = vv(a=3, b=0)
    assert v.get("a") == 3
    assert v.get("b") == 0
    assert v.get("zzz") == 0
    assert v == vv(a=3)
    assert hash(v) == hash(vv(a=3))
    assert "b" not in v
    assert len(v) == 1
    assert list(v) == ["a"]
    assert dict(v.items()) == {"a": 3}


def test_with_sequence_only_moves_forward() -> None:
    v = vv(a=3)
    assert v.with_sequence("a", 5) == vv(a=5)
    assert v.with_sequence("a", 2) == vv(a=3)
    assert v.with_sequence("b", 1) == vv(a=3, b=1)
    assert v == vv(a=3)  # immutable


def test_merge_and_dominates() -> None:
    a, b = vv(x=3, y=1), vv(y=4, z=2)
    merged = a.merge(b)
    assert merged == vv(x=3, y=4, z=2)
    assert merged.dominates(a)
    assert merged.dominates(b)
    assert not a.dominates(b)
    assert not b.dominates(a)
    assert a.dominates(a)
    assert a.dominates(VersionVector())
    assert not VersionVector().dominates(a)


vectors = st.dictionaries(st.sampled_from("abcde"), st.integers(0, 20)).map(VersionVector)


@given(vectors, vectors, vectors)
@settings(max_examples=200)
def test_merge_is_a_join(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(b).dominates(a)
    assert a.dominates(b) == (a.merge(b) == a)
    assert (a.dominates(b) and b.dominates(a)) == (a == b)


@given(vectors, vectors)
@settings(max_examples=200)
def test_missing_ranges_cover_exactly_what_remote_lacks(
    local: VersionVector, remote: VersionVector
) -> None:
    ranges = local.missing_ranges(remote)
    for node in "abcde":
        if local.get(node) > remote.get(node):
            assert ranges[node] == (remote.get(node) + 1, local.get(node))
        else:
            assert node not in ranges
    # after receiving those ranges the remote has seen everything we have
    caught_up = remote
    for node, (_, last) in ranges.items():
        caught_up = caught_up.with_sequence(node, last)
    assert caught_up.dominates(local)


def test_wire_round_trip_and_validation() -> None:
    v = VersionVector.from_wire({"n1": 4, "n2": 0})
    assert v.to_wire() == {"n1": 4}
    assert VersionVector.from_wire(v.to_wire()) == v
    for bad in [{"n": -1}, {"n": 1.5}, {"n": True}, {"n": "3"}, {3: 1}]:
        with pytest.raises(ValidationError):
            VersionVector.from_wire(bad)
    with pytest.raises(ValidationError, match="object"):
        VersionVector.from_wire([1])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        vv(a=1).with_sequence("a", -1)
    assert repr(vv(a=1)) == "VersionVector({'a': 1})"


def op(node: str, seq: int, wall: int, deps: tuple[str, ...] = ()) -> Operation:
    return Operation(
        id=f"{node}-{seq}",
        node_id=node,
        type=OpType.INSERT,
        collection="c",
        record_id="r",
        data={},
        previous_data=None,
        timestamp=HLCTimestamp(wall, 0, node),
        sequence_number=seq,
        causal_deps=deps,
    )


def test_compute_delta_fetches_missing_ranges_in_causal_order() -> None:
    log = {
        "a": [op("a", 1, 10), op("a", 2, 30, deps=("b-2",)), op("a", 3, 40)],
        "b": [op("b", 1, 5), op("b", 2, 50)],
    }
    calls: list[tuple[Any, ...]] = []

    def fetch(node: str, first: int, last: int) -> list[Operation]:
        calls.append((node, first, last))
        return [o for o in log[node] if first <= o.sequence_number <= last]

    delta = compute_delta(vv(a=3, b=2), vv(a=1, b=0, c=9), fetch)
    assert sorted(calls) == [("a", 2, 3), ("b", 1, 2)]
    assert [o.id for o in delta] == ["b-1", "a-3", "b-2", "a-2"]
    assert compute_delta(vv(a=1), vv(a=5), fetch) == []
    assert VersionVector.compute_delta(vv(b=1), vv(), fetch) == [log["b"][0]]
