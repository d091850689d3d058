"""``kora.sync._gc.catching_up``: a higher young-generation threshold, put back after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kora.sync._gc import CATCH_UP_THRESHOLD, catching_up


@pytest.fixture(autouse=True)
def default_thresholds() -> Iterator[None]:
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*found)


def test_the_threshold_is_raised_while_catching_up_and_put_back() -> None:
    with catching_up():
        assert gc.get_threshold() == (CATCH_UP_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_catch_ups_put_it_back_after_the_last() -> None:
    first, second = catching_up(), catching_up()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == CATCH_UP_THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_changed_meanwhile_are_left_alone() -> None:
    with catching_up():
        gc.set_threshold(1234, 5, 5)
    assert gc.get_threshold() == (1234, 5, 5)


@pytest.mark.parametrize("threshold", [0, 100_000])
def test_an_off_or_higher_threshold_is_kept(threshold: int) -> None:
    gc.set_threshold(threshold, 10, 10)
    with catching_up():
        assert gc.get_threshold() == (threshold, 10, 10)
    assert gc.get_threshold() == (threshold, 10, 10)
