"""Shared test configuration."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
VECTORS = SHARED / "spec" / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The golden vectors of the Kora sync protocol (../shared/spec/vectors)."""
    if not VECTORS.is_dir():
        pytest.fail(
            f"golden vectors not found at {VECTORS}: the shared/ folder must sit beside the repo"
        )
    return VECTORS


def postgres_required() -> bool:
    return os.environ.get("KORA_REQUIRE_POSTGRES") == "1"


# ------------------------------------------------------------ battery counts
# The reliability batteries (testing/reliability.md) print their counts (seeds, operations,
# faults, kills) on stdout, which pytest captures and hides for passing tests. This hook
# collects them and prints them at the end of every run, so `make test` shows them.
BATTERIES: tuple[tuple[str, str], ...] = (
    ("tests/reliability/test_simulation.py", "B1 simulation"),
    ("tests/reliability/test_simulation_targeted.py", "B1 targeted cases"),
    ("tests/reliability/test_targeted", "B1 targeted cases"),
    ("tests/reliability/test_sim_findings.py", "B1 findings"),
    ("tests/reliability/test_transport_faults.py", "B3 TCP fault proxy"),
    ("tests/store/test_durability.py", "B4 local write SIGKILL loop"),
    ("tests/reliability/test_client_sigkill.py", "B4 client SIGKILL loop"),
    ("tests/reliability/test_server_sigkill.py", "B4 server SIGKILL loop"),
    ("tests/reliability/test_abuse_", "B6 abuse and authorization"),
)
# Per-kill progress lines of the local-write loop; its summary line is enough.
_PROGRESS_LINE = re.compile(r"^kill \d+:")
_battery_outcomes: dict[str, Counter[str]] = {}
_battery_lines: dict[str, list[str]] = {}


def _battery_of(nodeid: str) -> str | None:
    for prefix, name in BATTERIES:
        if nodeid.startswith(prefix):
            return name
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    battery = _battery_of(report.nodeid)
    if battery is None:
        return
    outcomes = _battery_outcomes.setdefault(battery, Counter())
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        outcomes[outcome] += 1
    if report.when == "call":
        lines = _battery_lines.setdefault(battery, [])
        for title, text in report.sections:
            if title.startswith("Captured stdout"):
                lines.extend(
                    line for line in text.splitlines() if line and not _PROGRESS_LINE.match(line)
                )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _battery_outcomes:
        return
    terminalreporter.section("reliability batteries")
    for _, name in BATTERIES:
        outcomes = _battery_outcomes.pop(name, None)
        if outcomes is None:
            continue
        tally = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
        terminalreporter.write_line(f"{name}: {sum(outcomes.values())} tests ({tally})")
        for line in _battery_lines.get(name, []):
            terminalreporter.write_line(f"    {line}")
