"""Shared test configuration."""

from __future__ import annotations

import os
from pathlib import Path

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
