"""One embedded instance per BALANCE_HOME (issue 11, item 7), with real processes.

A second `balancectl run` on the same home used to start a second worker and a second
beat (every scheduled job twice). Now it is refused at once, naming BALANCE_HOME and the
holder's pid; `kill -9` of the first frees the home (its beat goes with it) and a new one
starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet_support import wait_for

pytestmark = pytest.mark.fleet


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"}
    }
    env["BALANCE_HOME"] = str(home)
    return env


def _balancectl() -> str:
    return str(Path(sys.executable).with_name("balancectl"))


def _start(home: Path, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_balancectl(), "run", "--concurrency=1"],
        env=_env(home),
        cwd=cwd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the test can see its children go
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _ready(log: Path) -> bool:
    return "ready." in log.read_text(errors="replace")


def test_a_second_run_on_the_same_home_is_refused_and_kill_9_frees_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first_log, third_log = tmp_path / "first.log", tmp_path / "third.log"
    first = _start(home, first_log, tmp_path)
    third: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: _ready(first_log), 90, "the first instance")
        assert "beat: Starting" in first_log.read_text(errors="replace")

        second = subprocess.run(
            [_balancectl(), "run", "--concurrency=1"],
            env=_env(home),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,  # refused at once: it never waits for the lock
        )
        assert second.returncode == 1, (second.stdout, second.stderr[-2000:])
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr
        assert "BALANCE_HOME" in lines[0] and str(home) in lines[0]
        assert f"pid {first.pid}" in lines[0]
        assert "starting worker" not in second.stderr
        assert first.poll() is None  # the holder is untouched

        # kill -9 of the main process only, as an operator would: its pool and its
        # embedded beat go with it (no orphaned beat), and the kernel drops the lock.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        wait_for(lambda: not _group_alive(first.pid), 30, "the first instance's children")

        third = _start(home, third_log, tmp_path)
        wait_for(lambda: _ready(third_log), 90, "a new instance after kill -9")
        assert (home / "run.lock").read_text().strip() == str(third.pid)
        assert "beat: Starting" in third_log.read_text(errors="replace")
    finally:
        _stop(first)
        if third is not None:
            _stop(third)
    assert "Traceback" not in third_log.read_text(errors="replace")
