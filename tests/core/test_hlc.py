"""HLC timestamps and the clock (spec 3.3), driven by a fake physical clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kora.core import InvalidTimestampError, RemoteClockDriftError
from kora.core.hlc import (
    DRIFT_ERROR_MS,
    DRIFT_WARN_MS,
    MAX_LOGICAL,
    MAX_REMOTE_AHEAD_MS,
    DriftLevel,
    HLCTimestamp,
    HybridLogicalClock,
    check_ingest_bounds,
    system_clock_ms,
)

T0 = 1_700_000_000_000


class FakeClock:
    """A physical clock that only moves when the test says so."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def ts(wall: int, logical: int = 0, node: str = "remote") -> HLCTimestamp:
    return HLCTimestamp(wall, logical, node)


def _from_wire(t: dict[str, Any]) -> HLCTimestamp:
    return HLCTimestamp(t["wallTime"], t["logical"], t["nodeId"])


def test_vectors(vectors_dir: Path) -> None:
    vectors = json.loads((vectors_dir / "hlc.json").read_text(encoding="utf-8"))
    for example in vectors["examples"]:
        assert _from_wire(example["timestamp"]).serialize() == example["serialized"]
        assert HLCTimestamp.parse(example["serialized"]) == _from_wire(example["timestamp"])
    for case in vectors["derived_cases"]:
        if case["operation"] == "serialize":
            stamp = _from_wire(case["timestamp"])
            if case.get("throws"):
                with pytest.raises(InvalidTimestampError):
                    stamp.serialize()
            else:
                assert stamp.serialize() == case["serialized"]
        else:
            assert HLCTimestamp.parse(case["serialized"]) == _from_wire(case["timestamp"])


@given(
    st.lists(
        st.builds(
            HLCTimestamp,
            st.integers(0, 10**15 - 1),
            st.integers(0, MAX_LOGICAL),
            st.text(st.characters(codec="utf-8"), max_size=4),
        ),
        min_size=2,
        max_size=2,
    )
)
@settings(max_examples=300)
def test_serialized_strings_sort_like_the_total_order(pair: list[HLCTimestamp]) -> None:
    a, b = pair
    # Compare serialized strings the way JS does: by UTF-16 code units.
    sa = a.serialize().encode("utf-16-be", "surrogatepass")
    sb = b.serialize().encode("utf-16-be", "surrogatepass")
    assert (a < b) == (sa < sb)
    assert HLCTimestamp.parse(a.serialize()) == a


def test_now_follows_physical_time_then_counts() -> None:
    clock = FakeClock()
    hlc = HybridLogicalClock("me", clock)
    assert hlc.last is None
    assert hlc.now() == HLCTimestamp(T0, 0, "me")
    assert hlc.now() == HLCTimestamp(T0, 1, "me")
    clock.ms -= 5000  # the physical clock steps back: logical time goes on
    assert hlc.now() == HLCTimestamp(T0, 2, "me")
    clock.ms = T0 + 1
    assert hlc.now() == HLCTimestamp(T0 + 1, 0, "me")
    assert hlc.last == HLCTimestamp(T0 + 1, 0, "me")


def test_now_carries_into_the_wall_time() -> None:
    hlc = HybridLogicalClock("me", FakeClock(), last=HLCTimestamp(T0, MAX_LOGICAL - 1, "me"))
    assert hlc.now() == HLCTimestamp(T0, MAX_LOGICAL, "me")
    assert hlc.now() == HLCTimestamp(T0 + 1, 0, "me")
    assert hlc.now() == HLCTimestamp(T0 + 1, 1, "me")


def test_now_is_strictly_increasing_under_any_physical_clock() -> None:
    clock = FakeClock()
    hlc = HybridLogicalClock("me", clock)
    previous = hlc.now()
    for step in [0, 3, -10, 0, 1, -1, 100, 0, 0, -100_000]:
        clock.ms += step
        current = hlc.now()
        assert current > previous
        previous = current


def test_last_restores_a_restarted_clock() -> None:
    first = HybridLogicalClock("me", FakeClock(T0 + 10))
    for _ in range(3):
        first.now()
    assert first.last is not None
    restarted = HybridLogicalClock("me", FakeClock(T0), last=first.last)
    assert restarted.now() == HLCTimestamp(T0 + 10, 3, "me")


@pytest.mark.parametrize(
    ("local", "physical", "remote", "expected"),
    [
        # physical time is ahead of both: (p, 0)
        ((T0, 5), T0 + 10, (T0 + 3, 9), (T0 + 10, 0)),
        # remote ahead of local and physical: (rw, rl + 1)
        ((T0, 5), T0, (T0 + 3, 9), (T0 + 3, 10)),
        # same wall time: max(l, rl) + 1
        ((T0, 5), T0, (T0, 9), (T0, 10)),
        ((T0, 12), T0, (T0, 9), (T0, 13)),
        # local ahead of remote and physical: logical + 1
        ((T0 + 5, 5), T0, (T0, 9), (T0 + 5, 6)),
        # carries
        ((T0, 0), T0, (T0 + 3, MAX_LOGICAL), (T0 + 4, 0)),
        ((T0, MAX_LOGICAL), T0, (T0, 3), (T0 + 1, 0)),
        ((T0 + 5, MAX_LOGICAL), T0, (T0, 3), (T0 + 6, 0)),
    ],
)
def test_receive_merge_rules(
    local: tuple[int, int],
    physical: int,
    remote: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    hlc = HybridLogicalClock("me", FakeClock(physical), last=HLCTimestamp(*local, "me"))
    assert hlc.receive(ts(*remote)) == HLCTimestamp(*expected, "me")
    assert hlc.last == HLCTimestamp(*expected, "me")


@pytest.mark.parametrize(
    "remote",
    [
        HLCTimestamp(-1, 0, "r"),
        HLCTimestamp(T0, -1, "r"),
        HLCTimestamp(T0, MAX_LOGICAL + 1, "r"),
        HLCTimestamp(1.5, 0, "r"),  # type: ignore[arg-type]
        HLCTimestamp(T0, 0.0, "r"),  # type: ignore[arg-type]
        HLCTimestamp(True, 0, "r"),  # type: ignore[arg-type]
        HLCTimestamp(10**15, 0, "r"),
        HLCTimestamp(T0, 0, 5),  # type: ignore[arg-type]
    ],
)
def test_receive_rejects_invalid_timestamps(remote: HLCTimestamp) -> None:
    hlc = HybridLogicalClock("me", FakeClock())
    hlc.now()
    before = hlc.last
    with pytest.raises(InvalidTimestampError):
        hlc.receive(remote)
    assert hlc.last == before


def test_receive_rejects_a_remote_clock_too_far_ahead() -> None:
    hlc = HybridLogicalClock("me", FakeClock())
    hlc.now()
    assert hlc.receive(ts(T0 + MAX_REMOTE_AHEAD_MS)).wall_time == T0 + MAX_REMOTE_AHEAD_MS
    before = hlc.last
    with pytest.raises(RemoteClockDriftError) as caught:
        hlc.receive(ts(T0 + MAX_REMOTE_AHEAD_MS + 1))
    assert caught.value.code == "CLOCK_DRIFT"
    assert hlc.last == before


def test_cold_start_without_reference_offset_accepts_any_remote_time() -> None:
    hlc = HybridLogicalClock("me", FakeClock())
    far = T0 + 10 * MAX_REMOTE_AHEAD_MS
    assert hlc.receive(ts(far, 4)) == HLCTimestamp(far, 5, "me")
    # No longer a cold start: the check applies from now on.
    with pytest.raises(RemoteClockDriftError):
        hlc.receive(ts(T0 + 20 * MAX_REMOTE_AHEAD_MS))


def test_cold_start_with_reference_offset_is_checked() -> None:
    hlc = HybridLogicalClock("me", FakeClock())
    hlc.set_reference_offset(0)
    with pytest.raises(RemoteClockDriftError):
        hlc.receive(ts(T0 + MAX_REMOTE_AHEAD_MS + 1))


def test_reference_offset_widens_the_window_for_a_slow_local_clock() -> None:
    slow_by = 10 * 60_000
    hlc = HybridLogicalClock("me", FakeClock(T0 - slow_by))
    hlc.now()
    with pytest.raises(RemoteClockDriftError):
        hlc.receive(ts(T0))
    hlc.set_reference_offset(slow_by)  # serverTime - localTime
    assert hlc.receive(ts(T0)) == HLCTimestamp(T0, 1, "me")
    assert hlc.drift_ms() == 0
    assert hlc.drift_level() is DriftLevel.OK


def test_drift_is_reported_never_raised_by_now() -> None:
    reports: list[tuple[DriftLevel, int]] = []
    clock = FakeClock()
    hlc = HybridLogicalClock(
        "me",
        clock,
        last=HLCTimestamp(T0 + DRIFT_ERROR_MS + 1, 0, "me"),
        on_drift=lambda *a: reports.append(a),
    )
    assert hlc.now() == HLCTimestamp(T0 + DRIFT_ERROR_MS + 1, 1, "me")
    assert reports == [(DriftLevel.ERROR, DRIFT_ERROR_MS + 1)]
    clock.ms = T0 + DRIFT_ERROR_MS + 1 - DRIFT_WARN_MS - 1
    hlc.now()
    assert reports[-1] == (DriftLevel.WARN, DRIFT_WARN_MS + 1)
    clock.ms = T0 + DRIFT_ERROR_MS + 1 - DRIFT_WARN_MS
    hlc.now()
    assert len(reports) == 2
    assert hlc.drift_level() is DriftLevel.OK


def test_advance_to_never_goes_backwards() -> None:
    hlc = HybridLogicalClock("me", FakeClock())
    hlc.advance_to(HLCTimestamp(T0 + 50, 7, "other"))
    assert hlc.now() == HLCTimestamp(T0 + 50, 8, "me")
    hlc.advance_to(HLCTimestamp(T0 + 10, 0, "other"))
    assert hlc.now() == HLCTimestamp(T0 + 50, 9, "me")


def test_constructor_and_offset_validation() -> None:
    with pytest.raises(ValueError, match="node_id"):
        HybridLogicalClock("")
    with pytest.raises(InvalidTimestampError):
        HybridLogicalClock("me", last=HLCTimestamp(0, MAX_LOGICAL + 1, "me"))
    hlc = HybridLogicalClock("me")
    with pytest.raises(TypeError):
        hlc.set_reference_offset(1.5)  # type: ignore[arg-type]
    hlc.set_reference_offset(-3)
    assert hlc.reference_offset == -3
    assert hlc.node_id == "me"


def test_default_physical_clock_is_integer_ms() -> None:
    before = system_clock_ms()
    stamp = HybridLogicalClock("me").now()
    assert type(stamp.wall_time) is int
    assert stamp.wall_time >= before


def test_float_physical_clock_is_truncated_to_ms() -> None:
    stamp = HybridLogicalClock("me", lambda: T0 + 0.7).now()  # type: ignore[arg-type,return-value]
    assert stamp.wall_time == T0
    assert type(stamp.wall_time) is int


def test_check_ingest_bounds() -> None:
    check_ingest_bounds(ts(T0 + 60_000), T0)
    check_ingest_bounds(ts(0), T0)
    with pytest.raises(InvalidTimestampError, match="ahead"):
        check_ingest_bounds(ts(T0 + 60_001), T0)
    with pytest.raises(InvalidTimestampError, match='Operation "abc" timestamp is too far'):
        check_ingest_bounds(ts(T0 + 2), T0, 1, operation_id="abc")
    with pytest.raises(InvalidTimestampError):
        check_ingest_bounds(ts(T0, MAX_LOGICAL + 1), T0)
    with pytest.raises(InvalidTimestampError):
        check_ingest_bounds(ts(-5), T0)


def test_parse_rejects_garbage() -> None:
    for text in ["", "1:2", "x:00000:n", "001:y:n", "-01:00000:n", "\u0661:00000:n"]:
        with pytest.raises(InvalidTimestampError):
            HLCTimestamp.parse(text)
