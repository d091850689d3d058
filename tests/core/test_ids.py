"""UUIDv7 (spec 3.4, RFC 9562)."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest

from kora.core.ids import is_uuid, uuid7, uuid7_time_ms

FORMAT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_format_version_variant_and_timestamp() -> None:
    before = time.time_ns() // 1_000_000
    text = uuid7()
    after = time.time_ns() // 1_000_000
    assert FORMAT.fullmatch(text)
    parsed = uuid.UUID(text)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == text
    assert before <= uuid7_time_ms(text) <= after + 1


def test_ids_strictly_increase_within_a_millisecond() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_strictly_increase_across_threads() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(uuid7() for _ in range(500))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for out in results for i in out]
    assert len(set(every)) == len(every)
    for out in results:
        assert out == sorted(out)


def test_is_uuid() -> None:
    assert is_uuid(uuid7())
    assert is_uuid(str(uuid.uuid4()))
    assert is_uuid(str(uuid.uuid4()).upper())
    for bad in ["", "not-a-uuid", str(uuid.uuid4())[:-1], str(uuid.uuid4()) + "0", 5, None]:
        assert not is_uuid(bad)


def test_uuid7_time_ms_rejects_other_versions() -> None:
    with pytest.raises(ValueError, match="UUIDv7"):
        uuid7_time_ms(str(uuid.uuid4()))
