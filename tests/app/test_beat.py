"""One beat dispatches per fleet (RedBeat lock); a standby takes over when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.fleet_support import Fleet, wait_for

pytestmark = pytest.mark.fleet

SENT = "Sending due task"


def _start_beat(tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / f"{name}.log"
    env = {**os.environ, "EVENTS_RELAY_INTERVAL": "1", "BEAT_LOCK_TIMEOUT": "5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel=DEBUG"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    return proc, log


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


def test_two_beats_one_dispatches_and_standby_takes_over(
    fleet: Fleet, tmp_path: Path, broker_url: str
) -> None:
    first, first_log = _start_beat(tmp_path, "beat1")
    try:
        wait_for(lambda: SENT in _text(first_log), 30, "the first beat to dispatch")
        second, second_log = _start_beat(tmp_path, "beat2")
        try:
            # Give the second beat several ticks: it must stay a standby.
            queue = redis.Redis.from_url(broker_url)
            before = queue.llen("balance.outbox")  # the relay job ticks every second
            wait_for(lambda: queue.llen("balance.outbox") >= before + 4, 30, "more ticks of beat 1")
            assert second.poll() is None, _text(second_log)
            assert SENT not in _text(second_log), "a standby beat dispatched while locked out"

            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            # The lock expires (BEAT_LOCK_TIMEOUT=5 s) and the standby starts dispatching.
            wait_for(lambda: SENT in _text(second_log), 30, "the standby to take over")
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGTERM)
                second.wait(20)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGTERM)
            first.wait(20)
