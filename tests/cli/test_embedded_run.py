"""`balancectl run` on the embedded default: no PostgreSQL, no Redis, files under BALANCE_HOME."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet_support import wait_for

pytestmark = pytest.mark.fleet


def _embedded_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"}
    }
    env.update(BALANCE_HOME=str(home), EVENTS_RELAY_INTERVAL="1")
    return env


def _balancectl() -> str:
    found = shutil.which("balancectl", path=str(Path(sys.executable).parent))
    assert found, "balancectl entry point not installed next to the test interpreter"
    return found


def _cli(env: dict[str, str], cwd: Path, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [_balancectl(), *args, "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_run_starts_worker_and_beat_without_servers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _embedded_env(home)
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [_balancectl(), "run", "--concurrency=1"],
        env=env,
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "ready." in log.read_text(errors="replace"), 60, "the embedded worker")
        assert (home / "balance.db").exists()
        assert (home / "broker.db").exists()

        account = _cli(env, tmp_path, "accounts", "create", "--name", "Embedded")
        account_id = str(account["id"])
        _cli(env, tmp_path, "adjust", account_id, "10", "--reason", "first credit")

        # A debit sent as a Celery message through the embedded broker, run by the worker.
        send = (
            "from worker.celery import app; "
            f"app.send_task('balance.usage.debit', args=['{account_id}', '0.0057', 'm1'])"
        )
        subprocess.run([sys.executable, "-c", send], env=env, cwd=tmp_path, check=True, timeout=60)
        wait_for(
            lambda: _cli(env, tmp_path, "accounts", "show", account_id)["balance"] == "9.9943",
            60,
            "the worker to run the debit",
        )

        # Beat runs in the same process and each job it runs is logged.
        wait_for(
            lambda: (
                "balance.events.relay" in log.read_text(errors="replace")
                and "succeeded" in log.read_text(errors="replace")
            ),
            60,
            "a beat job",
        )
        assert _cli(env, tmp_path, "audit")["ok"] is True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-3000:]
