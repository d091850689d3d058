"""Test set-up for ``actors``: the import path and a virtual-time limit on every async test."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path

import pytest
import trio

HERE = Path(__file__).resolve().parent

# pytest (import mode "prepend") puts ``tests/`` on ``sys.path`` because of ``tests/conftest.py``;
# this directory, ``tests/actors``, then looks like a namespace package named ``actors`` and
# shadows the editable install, whose finder runs after the path finder.  The repository root
# ahead on ``sys.path`` makes the regular package win.  (A repo-wide fix is
# ``pythonpath = ["."]`` under ``[tool.pytest.ini_options]``.)
ROOT = str(HERE.parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if getattr(sys.modules.get("actors"), "__file__", "") is None:
    del sys.modules["actors"]  # the namespace stand-in, imported before this ran

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
