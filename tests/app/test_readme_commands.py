"""The README's run and test commands are self-contained (issue 11, item 8): each makes its
own virtual environment in the same line, since Debian and Ubuntu refuse a `pip install` into
the system Python (PEP 668), and CI runs the README's test command word for word."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()
VENV = "python3 -m venv .venv && . .venv/bin/activate && "


def command_after(label: str) -> str:
    """The one line of the first ```bash block after the bold `label`."""
    match = re.search(rf"^\*\*{label}\*\*.*?```bash\n(.*?)```", README, re.DOTALL | re.MULTILINE)
    assert match, f"no **{label}** block in README.md"
    lines = [line for line in match.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_run_and_test_commands_start_with_a_venv() -> None:
    run, test = command_after("Run"), command_after("Test")
    assert run == VENV + "pip install -e . && balancectl run"
    assert test == VENV + 'pip install -e ".[dev]" && pytest'
    for command in (run, test):
        steps = [step.strip() for step in command.split("&&")]
        first_pip = next(i for i, step in enumerate(steps) if step.startswith("pip "))
        assert steps.index(". .venv/bin/activate") < first_pip


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    test = command_after("Test")
    assignment = re.search(r"^README_TEST_COMMAND=(.+)$", CI, re.MULTILINE)
    assert assignment, "no README_TEST_COMMAND in .ci/run"
    assert shlex.split(assignment.group(1)) == [test]
    assert re.search(r'^eval "\$README_TEST_COMMAND"$', CI, re.MULTILINE)
    # and it is the last thing CI does: a failing pytest fails the run
    assert CI.rstrip().splitlines()[-1] == 'eval "$README_TEST_COMMAND"'
    assert "set -euo pipefail" in CI
