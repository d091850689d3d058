"""Fixtures of the server tests: a fresh PostgreSQL schema per test.

PostgreSQL is expected at 127.0.0.1:5432, database ``test``, trust auth (override with
``KORA_TEST_POSTGRES_DSN``).  When it is unreachable the ``postgres`` tests are skipped with
the reason, unless ``KORA_REQUIRE_POSTGRES=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import attrs
import psycopg
import pytest
from psycopg import sql


def postgres_required() -> bool:
    """``postgres_required()`` of tests/conftest.py (KORA_REQUIRE_POSTGRES=1).

    Loaded by path: both conftest files are imported as the module ``conftest`` (the test
    folders are not packages), so a plain import cannot reach the root one.
    """
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("_kora_tests_root_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return bool(module.postgres_required())


POSTGRES_DSN = os.environ.get("KORA_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@attrs.frozen
class PostgresTarget:
    """Where a test's PostgreSQL store lives: the DSN and a schema of its own."""

    dsn: str
    schema: str


@functools.cache
def postgres_unreachable_reason() -> str | None:
    """``None`` if PostgreSQL answers, else why not (checked once per test run)."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_DSN} is unreachable: {exc}".strip()
    return None


def require_postgres() -> None:
    """Skip (or fail, with KORA_REQUIRE_POSTGRES=1) when PostgreSQL is unreachable."""
    reason = postgres_unreachable_reason()
    if reason is None:
        return
    if postgres_required():
        pytest.fail(f"{reason} (KORA_REQUIRE_POSTGRES=1)")
    pytest.skip(f"{reason}; set KORA_REQUIRE_POSTGRES=1 to make this a failure")


@pytest.fixture
def postgres_target() -> Iterator[PostgresTarget]:
    """A schema name no other test uses; the schema and its tables are dropped afterwards."""
    require_postgres()
    target = PostgresTarget(POSTGRES_DSN, f"kora_test_{secrets.token_hex(6)}")
    try:
        yield target
    finally:
        with psycopg.connect(target.dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema))
            )
