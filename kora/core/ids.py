"""Identifiers: UUIDv7 for node ids, record ids and message ids (spec 3.4, RFC 9562)."""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Final

__all__ = ["is_uuid", "uuid7", "uuid7_time_ms"]

_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_RANDOM_BITS: Final = 74  # rand_a (12 bits) and rand_b (62 bits)
_RANDOM_LIMIT: Final = 1 << _RANDOM_BITS
_MS_LIMIT: Final = 1 << 48


class _Uuid7Generator:
    """RFC 9562 UUIDv7 whose ids increase strictly, also within one millisecond.

    Within a millisecond (or while the system clock steps back) the 74 random bits act as a
    counter, as RFC 9562 section 6.2 method 2 allows; a fresh millisecond reseeds them with
    the top bit clear, so the counter cannot realistically overflow.  The lock makes the
    sequence strictly increasing across threads too (stores call this from worker threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def __call__(self) -> str:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = secrets.randbits(_RANDOM_BITS - 1)
            else:
                self._counter += 1
                if self._counter >= _RANDOM_LIMIT:  # borrow the next millisecond
                    self._last_ms += 1
                    self._counter = secrets.randbits(_RANDOM_BITS - 1)
            ms, counter = self._last_ms % _MS_LIMIT, self._counter
        rand_a = counter >> 62
        rand_b = counter & ((1 << 62) - 1)
        value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


uuid7 = _Uuid7Generator()
"""``uuid7() -> str``: a new lowercase UUIDv7, strictly greater than the previous one."""


def is_uuid(text: object) -> bool:
    """Whether ``text`` is a UUID in 8-4-4-4-12 hex form (any version, any case)."""
    return isinstance(text, str) and _UUID.fullmatch(text) is not None


def uuid7_time_ms(text: str) -> int:
    """The millisecond timestamp in a UUIDv7.

    Raises:
        ValueError: If ``text`` is not a version 7 UUID.
    """
    if not is_uuid(text) or text[14] != "7":
        raise ValueError(f"not a UUIDv7: {text!r}")
    return int(text[:8] + text[9:13], 16)
