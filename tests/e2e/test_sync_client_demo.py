"""``kora demo``: a server and two apps in one terminal, a write, an offline period, catch-up."""

from __future__ import annotations

import pytest

from kora.cli import main


def test_demo_shows_the_write_the_offline_period_and_the_catch_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "B sees ['buy milk']" in out
    assert "A has 2 operations queued" in out
    assert "B sees ['buy milk', 'call mum', 'walk the dog']" in out
    assert "[A] offline" in out
    assert "[B] synced" in out
    assert "1 reconnect(s)" in out
