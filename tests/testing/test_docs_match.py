"""docs/testing.md shows tests/testing/test_docs_example.py verbatim (that file runs it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_example_is_the_tested_file() -> None:
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python skip\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    example = (ROOT / "tests" / "testing" / "test_docs_example.py").read_text(encoding="utf-8")
    assert example in blocks
    assert len(example.strip().splitlines()) <= 20
