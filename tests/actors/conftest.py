"""Test set-up for ``actors``: a virtual-time limit on every async test in this directory."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path

import pytest
import trio

HERE = Path(__file__).resolve().parent

#: Seconds on trio's clock after which an async test here fails instead of hanging.  Under
#: the autojump clock a supervisor that wrongly never gives up would otherwise run for ever.
VIRTUAL_TIME_LIMIT = 1000.0


def _within_virtual_time_limit(
    test: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def limited(**kwargs: object) -> None:
        with trio.fail_after(VIRTUAL_TIME_LIMIT):
            await test(**kwargs)

    return limited


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Outermost wrapper, so this runs before pytest-trio wraps the test in trio.run.
    if (
        isinstance(item, pytest.Function)
        and item.path.is_relative_to(HERE)
        and inspect.iscoroutinefunction(item.obj)
    ):
        item.obj = _within_virtual_time_limit(item.obj)
    yield
