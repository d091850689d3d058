"""Reference conversations replayed through our state machines, frame for frame."""

from __future__ import annotations

from pathlib import Path

import pytest
from protocol_replay import Line, conversations, replay_client, replay_server

Captured = dict[tuple[str, str], list[Line]]


@pytest.fixture(scope="module")
def captured(vectors_dir: Path) -> Captured:
    return conversations(vectors_dir)


def test_every_scenario_is_there(captured: Captured) -> None:
    assert {scenario for scenario, _ in captured} >= {"json", "auth", "live"}


def test_client_session_answers_the_reference_server_like_the_reference_client(
    captured: Captured,
) -> None:
    for connection, lines in captured.items():
        for ours, theirs in replay_client(lines):
            assert ours == theirs, connection


def test_server_session_answers_the_reference_client_like_the_reference_server(
    captured: Captured,
) -> None:
    for connection, lines in captured.items():
        for ours, theirs in replay_server(lines):
            assert ours == theirs, connection
