"""The reconnection table: exact delays, the cap, jitter that never exceeds the table."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kora.sync import ReconnectBackoff


def test_default_table_is_the_documented_one() -> None:
    backoff = ReconnectBackoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [0, 1, 2, 4, 8, 16, 30, 30]


def test_custom_interval_and_cap() -> None:
    backoff = ReconnectBackoff(initial=0.5, maximum=3.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_very_late_attempts_stay_at_the_cap() -> None:
    assert ReconnectBackoff().delay(10_000) == 30.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_are_numbered_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="from 1"):
        ReconnectBackoff().delay(attempt)


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"maximum": -1.0}, {"jitter": 1.5}, {"jitter": -0.1}]
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ReconnectBackoff(**kwargs)


@given(
    attempt=st.integers(min_value=1, max_value=40),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jitter_never_exceeds_the_table(attempt: int, jitter: float, seed: int) -> None:
    backoff = ReconnectBackoff(jitter=jitter)
    delay = backoff.delay(attempt, random.Random(seed))
    table = backoff.table_delay(attempt)
    assert table * (1 - jitter) <= delay <= table
