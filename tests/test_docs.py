"""Every ```python block in docs/ runs as a test.

The blocks of one page run in order in one namespace, so a page can build an example up step
by step.  If the page defines ``async def main()``, it is run with ``trio.run`` at the end.
A block fenced as ```python skip is shown to readers but not run (say why next to it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_blocks(page: Path) -> list[str]:
    return [
        code
        for info, code in BLOCK.findall(page.read_text(encoding="utf-8"))
        if "skip" not in info.split()
    ]


PAGES = sorted(p for p in DOCS.glob("*.md") if runnable_blocks(p))


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_doc_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples may create files; keep them out of the repo
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for code in runnable_blocks(page):
        exec(compile(code, str(page), "exec"), namespace)
    main = namespace.get("main")
    if main is not None:
        trio.run(main)  # type: ignore[arg-type]


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"
