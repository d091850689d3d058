"""The documented reconnection delays, as a pure value (no clock, no I/O).

Attempt 1 is immediate, attempt 2 waits ``initial`` seconds, each later one twice the one
before, capped at ``maximum``: with the defaults 0, 1, 2, 4, 8, 16, 30, 30 ... seconds.  The
counter is reset after a successful handshake, so a dropped connection is retried at once.

Jitter is off by default.  When on, a delay is drawn uniformly from
``[delay * (1 - jitter), delay]``: it never exceeds the table, so the table stays the
documented upper bound.
"""

from __future__ import annotations

import random

import attrs

__all__ = ["ReconnectBackoff"]


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds, not {value!r}")


def _fraction(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"jitter is a fraction in [0, 1], not {value!r}")


@attrs.frozen(kw_only=True)
class ReconnectBackoff:
    """The delay before each connection attempt.

    Attributes:
        initial: Delay before attempt 2 (``reconnect_interval``), seconds.
        maximum: Cap (``max_reconnect_interval``), seconds.
        jitter: Fraction of a delay that may be taken off at random (0: exact table).
    """

    initial: float = attrs.field(default=1.0, validator=_positive)
    maximum: float = attrs.field(default=30.0, validator=_positive)
    jitter: float = attrs.field(default=0.0, validator=_fraction)

    def table_delay(self, attempt: int) -> float:
        """The table's delay before attempt ``attempt`` (1-based), without jitter."""
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, not {attempt!r}")
        if attempt == 1:
            return 0.0
        # 2 ** 64 is far past any cap; keeps the power from growing without need.
        exponent = min(attempt - 2, 64)
        return float(min(self.initial * 2**exponent, self.maximum))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before attempt ``attempt`` (1-based), with jitter if configured."""
        base = self.table_delay(attempt)
        if self.jitter == 0 or base == 0:
            return base
        draw = (rng or random).random()
        return base * (1 - self.jitter * draw)
