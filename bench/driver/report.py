"""Result rows, percentiles, the closing table and the PASS/FAIL targets."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Final, TextIO

import attrs

KORA: Final = "kora"
PEER: Final = "pycrdt"
FLOOR: Final = "floor"
SYSTEMS: Final = (KORA, PEER, FLOOR)
#: Table order: scenarios whose name starts with these come first, in this order.
ORDER: Final = ("latency", "throughput", "initial_sync", "fanout", "wire_bytes", "memory")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the peer bench's definition, so figures compare)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[index]


@attrs.frozen
class Row:
    scenario: str
    system: str
    metric: str
    value: float
    unit: str

    def as_json(self) -> str:
        return json.dumps(attrs.asdict(self))


@attrs.frozen
class Target:
    """One goal from the issue: ``value(report)`` at most ``limit`` (or at least, when
    ``higher_is_better``) passes.

    ``value`` returns None when a figure it needs was not measured (printed as N/A: a
    missing figure is never a pass).  ``context`` adds measured figures to the verdict's
    line, whatever the verdict.
    """

    name: str
    limit: float
    value: Callable[[Report], float | None]
    explain: str
    higher_is_better: bool = False
    #: Figures printed beside the verdict (what bounds it), None when there are none.
    context: Callable[[Report], str | None] | None = None


class Report:
    """Collects rows as they are measured and prints each one as a JSON line at once."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self._out = out  # None: whatever sys.stdout is when a row is printed

    def emit(self, scenario: str, system: str, metric: str, value: float, unit: str) -> None:
        row = Row(scenario, system, metric, round(float(value), 4), unit)
        self.rows.append(row)
        print(row.as_json(), file=self._out or sys.stdout, flush=True)

    def note(self, text: str) -> None:
        """Something the reader of the table must know (a skipped scenario, a failure)."""
        self.notes.append(text)
        print(f"# {text}", file=self._out or sys.stdout, flush=True)

    def get(self, scenario: str, system: str, metric: str) -> float | None:
        for row in reversed(self.rows):
            if (row.scenario, row.system, row.metric) == (scenario, system, metric):
                return row.value
        return None

    def table(self) -> str:
        """One line per (scenario, metric): each system's value, kora/pycrdt, kora/floor."""
        keys: list[tuple[str, str]] = []
        units: dict[tuple[str, str], str] = {}
        for row in self.rows:
            key = (row.scenario, row.metric)
            if key not in units:
                keys.append(key)
                units[key] = row.unit
        keys.sort(key=lambda key: _rank(key[0]))
        width = max([26, *(len(metric) for _, metric in keys)])  # the columns stay aligned
        head = (
            f"{'scenario':<22} {'metric':<{width}} {'unit':<6} {'kora':>11} {'pycrdt':>11} "
            f"{'floor':>11} {'kora/pycrdt':>11} {'kora/floor':>10}"
        )
        lines = [head, "-" * len(head)]
        for scenario, metric in keys:
            values = {s: self.get(scenario, s, metric) for s in SYSTEMS}
            lines.append(
                f"{scenario:<22} {metric:<{width}} {units[(scenario, metric)]:<6} "
                + " ".join(_number(values[s]) for s in SYSTEMS)
                + f" {_ratio(values[KORA], values[PEER]):>11} "
                + f"{_ratio(values[KORA], values[FLOOR]):>10}"
            )
        return "\n".join(lines)

    def verdicts(self, targets: Sequence[Target]) -> list[tuple[str, str]]:
        """``(PASS | FAIL | N/A, text)`` per target."""
        out: list[tuple[str, str]] = []
        for target in targets:
            value = target.value(self)
            context = None if target.context is None else target.context(self)
            beside = "" if context is None else f" [{context}]"
            if value is None or math.isnan(value):
                out.append(("N/A", f"{target.name}: not measured ({target.explain}){beside}"))
                continue
            if target.higher_is_better:
                verdict, bound = ("PASS" if value >= target.limit else "FAIL"), ">="
            else:
                verdict, bound = ("PASS" if value <= target.limit else "FAIL"), "<="
            out.append(
                (
                    verdict,
                    f"{target.name}: {value:.3g} (want {bound} {target.limit:g}; "
                    f"{target.explain}){beside}",
                )
            )
        return out

    def ratio(self, a: tuple[str, str, str], b: tuple[str, str, str]) -> float | None:
        """``get(*a) / get(*b)``, None when either is missing or the divisor is 0."""
        top, bottom = self.get(*a), self.get(*b)
        if top is None or not bottom:
            return None
        return top / bottom


def _rank(scenario: str) -> int:
    for index, prefix in enumerate(ORDER):
        if scenario.startswith(prefix):
            return index
    return len(ORDER)


def _number(value: float | None) -> str:
    if value is None:
        return f"{'-':>11}"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-2):
        return f"{value:>11.3g}"
    return f"{value:>11,.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"
