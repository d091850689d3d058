"""Counters, gauges and histograms, rendered in the Prometheus text exposition format.

A deliberately small registry (no dependency on ``prometheus_client``): the server owns one
``ServerMetrics`` and every module records into it with sync calls that never block.
Label values are bounded by construction (transport names, rejection codes, store calls), so
the number of series cannot grow with traffic.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from time import perf_counter
from typing import Final

__all__ = ["Counter", "Gauge", "Histogram", "MetricsRegistry", "ServerMetrics"]

LabelValues = tuple[str, ...]

#: Seconds; spans a memory store (tens of µs) to a slow remote database (seconds).
STORE_LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _series(name: str, labelnames: Sequence[str], values: LabelValues, extra: str = "") -> str:
    pairs = [f'{k}="{_escape_label(v)}"' for k, v in zip(labelnames, values, strict=True)]
    if extra:
        pairs.append(extra)
    return f"{name}{{{','.join(pairs)}}}" if pairs else name


class _Metric:
    kind: str = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def _key(self, labels: Sequence[str]) -> LabelValues:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(labels)

    def header(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"

    def samples(self) -> Iterator[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        if len(labels) != len(self.labelnames):
            self._key(labels)  # raises
        # (``labels`` is a tuple already: counted per frame, so no copy and no extra call.)
        values = self._values
        values[labels] = values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> Iterator[str]:
        if not self.labelnames and not self._values:
            yield f"{self.name} 0"
        for key, value in sorted(self._values.items()):
            yield f"{_series(self.name, self.labelnames, key)} {_format_value(value)}"


class Gauge(_Metric):
    """A value that goes up and down, or is read from a callback at render time."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        *,
        callback: Callable[[], dict[LabelValues, float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}
        self._callback = callback

    def set(self, value: float, *labels: str) -> None:
        self._values[self._key(labels)] = value

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, *labels: str) -> None:
        self.inc(-amount, *labels)

    def value(self, *labels: str) -> float:
        if self._callback is not None:
            return self._callback().get(self._key(labels), 0.0)
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> Iterator[str]:
        values = self._callback() if self._callback is not None else self._values
        if not self.labelnames and not values:
            yield f"{self.name} 0"
        for key, value in sorted(values.items()):
            yield f"{_series(self.name, self.labelnames, key)} {_format_value(value)}"


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = STORE_LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, *labels: str) -> int:
        return sum(self._counts.get(self._key(labels), ()))

    @contextmanager
    def time(self, *labels: str) -> Iterator[None]:
        """Observe the wall-clock duration of the ``with`` body (also when it raises)."""
        started = perf_counter()
        try:
            yield
        finally:
            self.observe(perf_counter() - started, *labels)

    def samples(self) -> Iterator[str]:
        for key in sorted(self._counts):
            cumulative = 0
            counts = self._counts[key]
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_format_value(bound)}"'
                series = _series(f"{self.name}_bucket", self.labelnames, key, le)
                yield f"{series} {cumulative}"
            name_sum = _series(f"{self.name}_sum", self.labelnames, key)
            yield f"{name_sum} {_format_value(self._sums[key])}"
            yield f"{_series(f'{self.name}_count', self.labelnames, key)} {cumulative}"


class MetricsRegistry:
    """An ordered set of metrics with one ``render()``."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric

    def render(self) -> str:
        """The Prometheus text format (version 0.0.4), newline-terminated."""
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """Every metric the sync server records, registered in one registry."""

    #: The ``Content-Type`` of ``render()`` output.
    CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(
        self,
        *,
        uptime: Callable[[], float],
        queue_depths: Callable[[], dict[LabelValues, float]] | None = None,
    ) -> None:
        self.registry = MetricsRegistry()
        self.sessions = Gauge("kora_sessions", "Open sync sessions.", ["transport"])
        self.sessions_opened = Counter(
            "kora_sessions_opened_total", "Sync sessions opened.", ["transport"]
        )
        self.connections_refused = Counter(
            "kora_connections_refused_total",
            "Connections refused before a session started.",
            ["reason"],
        )
        self.operations_received = Counter(
            "kora_operations_received_total", "Operations received from clients."
        )
        self.operations_applied = Counter(
            "kora_operations_applied_total", "Received operations newly stored (not duplicates)."
        )
        self.operations_sent = Counter(
            "kora_operations_sent_total", "Operations sent to clients in delivery batches."
        )
        self.bytes_received = Counter(
            "kora_bytes_received_total", "Frame bytes received.", ["transport"]
        )
        self.bytes_sent = Counter("kora_bytes_sent_total", "Frame bytes sent.", ["transport"])
        self.rejections = Counter(
            "kora_operation_rejections_total", "Operations refused, by code.", ["code"]
        )
        self.errors = Counter("kora_errors_total", "Error messages sent, by code.", ["code"])
        self.queue_depth = Gauge(
            "kora_queue_depth",
            "Items waiting in bounded queues (hub wake-ups, long-poll frames).",
            ["queue"],
            callback=queue_depths,
        )
        self.store_latency = Histogram(
            "kora_store_seconds", "Latency of server store calls.", ["call"]
        )
        self.uptime = Gauge(
            "kora_uptime_seconds",
            "Seconds since the server started.",
            callback=lambda: {(): uptime()},
        )
        for metric in (
            self.sessions,
            self.sessions_opened,
            self.connections_refused,
            self.operations_received,
            self.operations_applied,
            self.operations_sent,
            self.bytes_received,
            self.bytes_sent,
            self.rejections,
            self.errors,
            self.queue_depth,
            self.store_latency,
            self.uptime,
        ):
            self.registry.register(metric)

    def render(self) -> str:
        return self.registry.render()
