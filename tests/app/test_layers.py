"""The layers hold (pyproject.toml's import-linter contracts), and breaking one is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=120
    )


def test_the_contracts_hold_and_a_rule_that_imports_celery_breaks_them(tmp_path: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("worker", "config"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")

    kept = _lint(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "0 broken" in kept.stdout

    rules = tmp_path / "worker" / "ledger" / "service.py"
    rules.write_text(rules.read_text() + "\nimport celery  # a rule that knows Celery\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "Rules know no Celery and no screen" in broken.stdout
    assert "worker.ledger is not allowed to import celery" in broken.stdout

    rules.write_text(rules.read_text().replace("import celery", "import worker.auto_reload.plan"))
    upward = _lint(tmp_path)
    assert upward.returncode != 0  # the ledger sits below auto-reload
    assert "worker.ledger is not allowed to import worker.auto_reload" in upward.stdout

    # Virtual numbers sit above the ledger (it reaches them through hooks) and below
    # auto-reload (whose sweep reads their look-ahead): the ledger may not import them.
    rules.write_text(
        rules.read_text().replace("import worker.auto_reload.plan", "import worker.numbers.hooks")
    )
    to_numbers = _lint(tmp_path)
    assert to_numbers.returncode != 0
    assert "worker.ledger is not allowed to import worker.numbers" in to_numbers.stdout
