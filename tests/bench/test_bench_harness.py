"""Sanity of ``python -m bench`` at tiny sizes (``--quick``): it runs, every figure is a
well-formed JSON line, the table and the targets are printed.  No timing assertions: the
figures themselves belong to ``make bench``.

The peer (pycrdt-websocket) is only in the ``bench`` extra; without it the runs skip it and
say so.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest

from bench.__main__ import QUICK, main, throughput_context
from bench.driver import peer
from bench.driver.cpu import CpuSpent, cores, emit_cpu
from bench.driver.kora_stack import throughput_scenario
from bench.driver.procs import cpu_seconds, run_delay_seconds
from bench.driver.report import FLOOR, KORA, PEER, Report, Target, percentile

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {"scenario", "system", "metric", "value", "unit"}


def _rows(output: str) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    for row in rows:
        assert set(row) == ROW_KEYS, row
        assert row["system"] in (KORA, PEER, FLOOR)
        assert isinstance(row["value"], int | float), row
        assert math.isfinite(row["value"]), row
    return rows


def _notes(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("note: ")]


def _measured(rows: list[dict[str, object]], system: str) -> set[str]:
    return {str(row["scenario"]) for row in rows if row["system"] == system}


def _metrics(rows: list[dict[str, object]], scenario: str, system: str) -> set[str]:
    return {
        str(row["metric"])
        for row in rows
        if row["scenario"] == scenario and row["system"] == system
    }


# ------------------------------------------------------------------------ report pieces


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 51.0  # index round(0.5 * 99) = 50 (banker's rounding)
    assert percentile(values, 99) == 99.0
    assert percentile(list(reversed(values)), 0) == 1.0
    assert math.isnan(percentile([], 50))


def test_table_puts_systems_side_by_side_with_ratios() -> None:
    report = Report(out=io.StringIO())
    report.emit("latency", KORA, "p50_ms", 2.0, "ms")
    report.emit("latency", PEER, "p50_ms", 4.0, "ms")
    report.emit("latency", FLOOR, "p50_ms", 0.5, "ms")
    report.emit("memory", KORA, "per_idle_conn_kib", 40.0, "KiB")
    lines = report.table().splitlines()
    latency = next(line for line in lines if line.startswith("latency"))
    assert latency.split()[-2:] == ["0.50", "4.00"]  # kora/pycrdt, kora/floor
    memory = next(line for line in lines if line.startswith("memory"))
    assert memory.split()[-2:] == ["-", "-"]


def test_verdicts_pass_fail_and_missing() -> None:
    report = Report(out=io.StringIO())
    report.emit("throughput", KORA, "ops_per_s", 300.0, "ops/s")
    report.emit("throughput", PEER, "ops_per_s", 3000.0, "ops/s")
    report.emit("fanout", KORA, "p99_ms", 20.0, "ms")
    targets = [
        Target(
            "fast",
            10.0,
            lambda r: r.ratio(("throughput", KORA, "ops_per_s"), ("throughput", PEER, "ops_per_s")),
            "x",
            higher_is_better=True,
        ),
        Target("fanout", 50.0, lambda r: r.get("fanout", KORA, "p99_ms"), "ms"),
        Target("memory", 64.0, lambda r: r.get("memory", KORA, "per_idle_conn_kib"), "KiB"),
    ]
    assert [v for v, _ in report.verdicts(targets)] == ["FAIL", "PASS", "N/A"]


def test_verdict_prints_its_context_whatever_the_verdict() -> None:
    report = Report(out=io.StringIO())
    report.emit("throughput", KORA, "ops_per_s", 9000.0, "ops/s")
    report.emit("throughput", KORA, "cpu_floor_ops_per_s", 12000.0, "ops/s")
    ratio = Target(
        "throughput vs pycrdt",
        10.0,
        lambda r: r.ratio(("throughput", KORA, "ops_per_s"), ("throughput", PEER, "ops_per_s")),
        "x",
        higher_is_better=True,
        context=throughput_context,
    )
    batched = partial(throughput_context, per_tx=1000)
    [(verdict, text)] = report.verdicts([ratio])
    assert verdict == "N/A"  # no peer figure: never a pass
    assert "kora 9,000 ops/s" in text
    assert "CPU floor 12,000 ops/s" in text
    report.emit("throughput", PEER, "ops_per_s", 3000.0, "ops/s")
    [(verdict, text)] = report.verdicts([ratio])
    assert verdict == "FAIL"
    assert "pycrdt 3,000 ops/s" in text
    assert "CPU floor 12,000 ops/s" in text
    report.emit("throughput_tx1000", PEER, "ops_per_s", 70000.0, "ops/s")
    [(_, text)] = report.verdicts([attrs.evolve(ratio, context=batched)])
    assert "pycrdt in transactions of 1,000: 70,000 ops/s" in text


def test_cpu_rows_per_op_and_floors() -> None:
    report = Report(out=io.StringIO())
    spent = CpuSpent(server=0.5, clients=1.5, wall=2.0, waited=0.25)
    emit_cpu(report, "throughput", KORA, spent, 1000, floors=True)
    assert report.get("throughput", KORA, "server_cpu_us_per_op") == 500.0
    assert report.get("throughput", KORA, "runqueue_wait_us_per_op") == 250.0
    assert report.get("throughput", KORA, "clients_cpu_us_per_op") == 1500.0
    # every core busy for 2 s of CPU per 1,000 ops; one core per process: the clients bound
    assert report.get("throughput", KORA, "cpu_floor_ops_per_s") == cores() * 500.0
    assert report.get("throughput", KORA, "busiest_process_ops_per_s") == pytest.approx(666.6667)
    assert report.get("throughput", KORA, "cpu_busy_pct") == pytest.approx(100 / cores())


def test_cpu_rows_without_our_server_have_no_floor() -> None:
    report = Report(out=io.StringIO())
    emit_cpu(report, "latency", KORA, CpuSpent(None, 0.2, 1.0), 100, floors=True)
    assert [row.metric for row in report.rows] == ["clients_cpu_us_per_op"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_proc_readings_of_this_process() -> None:
    own = os.getpid()
    seconds = cpu_seconds(own)
    delay = run_delay_seconds(own)
    assert seconds is not None
    assert seconds >= 0
    assert delay is None or delay >= 0  # None when the kernel keeps no schedstat
    assert cpu_seconds(2**22 + 1) is None  # above the default pid_max: no such process


def test_throughput_rows_are_named_by_transaction_size() -> None:
    assert throughput_scenario(1000, 1000) == "throughput"
    assert throughput_scenario(1, 1000) == "throughput_single"
    assert throughput_scenario(100, 1000) == "throughput_tx100"


# --------------------------------------------------------------------------- whole runs


def test_quick_run_with_own_servers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--scenarios", "floors,latency,throughput,memory"]) == 0
    output = capsys.readouterr().out
    rows = _rows(output)
    assert {"latency", "memory", "throughput", "throughput_single"} <= _measured(rows, KORA)
    assert {"server_cpu_us_per_op", "clients_cpu_us_per_op"} <= _metrics(rows, "latency", KORA)
    assert {
        "ops_per_s",
        "local_writes_per_s",
        "server_cpu_us_per_op",
        "clients_cpu_us_per_op",
        "cpu_floor_ops_per_s",
        "busiest_process_ops_per_s",
        "cpu_busy_pct",
    } <= _metrics(rows, "throughput", KORA)
    assert {"latency", "floor_sqlite"} <= _measured(rows, FLOOR)
    assert {"three_commits_ms", "durable_relay_p50_ms", "durable_relay_p99_ms"} <= _metrics(
        rows, "latency", FLOOR
    )
    assert re.search(r"bare relay with those three commits p50 [\d.]+ ms", output)
    assert "durable_pipeline_ops_per_s" in _metrics(rows, "throughput", FLOOR)
    assert re.search(r"three durable sqlite3 stores with a bare relay [\d,]+ ops/s", output)
    if peer.available():
        batched = f"throughput_tx{QUICK.per_tx}"  # the peer in transactions of our size
        assert {"latency", "memory", "throughput", batched} <= _measured(rows, PEER)
    else:
        assert any("pycrdt-websocket is not installed" in n for n in _notes(output))
    assert not [n for n in _notes(output) if "failed" in n]
    assert re.search(r"^scenario +metric +unit +kora +pycrdt +floor", output, re.MULTILINE)
    verdicts = re.findall(r"^(PASS|FAIL|N/A) ", output, re.MULTILINE)
    assert len(verdicts) == 7


@pytest.fixture
def kora_server(tmp_path: Path) -> Iterator[str]:
    """A ``kora serve`` on a free port; yields its ws:// URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kora.cli", "serve", "--port", "0", "--db", str(tmp_path / "s.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"ws://127\.0\.0\.1:\d+/", line)
        assert match, f"kora serve printed {line!r}"
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_quick_run_against_server_url(kora_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = "throughput,initial_sync,fanout,wire_bytes,memory"
    assert (
        main(["--quick", "--no-peer", "--server-url", kora_server, "--scenarios", scenarios]) == 0
    )
    output = capsys.readouterr().out
    rows = _rows(output)
    initial = f"initial_sync_{QUICK.init_sizes[0]}"
    assert _measured(rows, KORA) >= {"throughput", initial, "fanout", "wire_bytes"}
    assert _measured(rows, PEER) == set()
    # The server is not ours: only the clients' CPU, no floor derived from it.
    throughput = _metrics(rows, "throughput", KORA)
    assert "clients_cpu_us_per_op" in throughput
    assert not {"server_cpu_us_per_op", "cpu_floor_ops_per_s"} & throughput
    notes = _notes(output)
    assert any("memory: skipped for --server-url" in n for n in notes)
    assert not [n for n in notes if "failed" in n]
