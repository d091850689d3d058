"""A higher threshold of the young garbage-collector generation while a catch-up runs.

A catch-up decodes and stores tens of thousands of operations, each a few container
objects that live until its group is committed.  With CPython's default threshold (700
allocations) the collector runs every couple of hundred operations, and the survivors it
promotes make it walk the whole heap every ten thousand or so: about a tenth of a fresh
client's CPU for 100,000 records.  None of that is garbage; reference counting frees it.

``catching_up()`` raises the threshold for as long as at least one connection of the
process is catching up, and puts back what it found once the last one is done (unless
something else changed the thresholds meanwhile: then they are left alone).  Collections
still happen, only less often; a process whose collector is off stays so.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["CATCH_UP_THRESHOLD", "catching_up"]

#: The young generation's threshold during a catch-up (CPython's default is 700).
CATCH_UP_THRESHOLD: Final = 50_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None


def _enter() -> None:
    global _active, _saved
    with _lock:
        _active += 1
        if _active > 1:
            return
        found = gc.get_threshold()
        if 0 < found[0] < CATCH_UP_THRESHOLD:
            _saved = found
            gc.set_threshold(CATCH_UP_THRESHOLD, found[1], found[2])


def _leave() -> None:
    global _active, _saved
    with _lock:
        _active -= 1
        if _active or _saved is None:
            return
        if gc.get_threshold() == (CATCH_UP_THRESHOLD, _saved[1], _saved[2]):
            gc.set_threshold(*_saved)
        _saved = None


@contextmanager
def catching_up() -> Iterator[None]:
    """Within: a higher young-generation threshold (see the module docstring)."""
    _enter()
    try:
        yield
    finally:
        _leave()
