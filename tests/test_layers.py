"""The import-linter contracts really bite: a pure module that imports trio breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def run_lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts the copied tree first, so grimp analyses the copy, not the checkout.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_tree(dest: Path) -> Path:
    for name in ("kora", "actors"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_contracts_hold_on_the_checkout(tmp_path: Path) -> None:
    result = run_lint_imports(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_importing_trio_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    hlc = tree / "kora" / "core" / "hlc.py"
    hlc.write_text(hlc.read_text(encoding="utf-8") + "\nimport trio  # injected by the test\n")
    result = run_lint_imports(tree)
    assert result.returncode != 0
    assert "kora.core is not allowed to import trio" in result.stdout
    assert "kora.core.hlc -> trio" in result.stdout


def test_actors_importing_kora_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    init = tree / "actors" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8") + "\nimport kora  # injected by the test\n")
    result = run_lint_imports(tree)
    assert result.returncode != 0
    assert "actors is not allowed to import kora" in result.stdout
