"""Real `celery worker` processes against the session's PostgreSQL and Redis (not eager mode).

The `fleet` fixture (tests/conftest.py) starts them; tests marked `fleet` use it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the pool children too)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)


@dataclass
class Fleet:
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(
        self, concurrency: int = 2, pool: str = "prefork", extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        name = f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}@localhost"
        log = self.tmp / f"{name.split('@')[0]}.log"
        env = {**os.environ, **(extra_env or {})}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={concurrency}",
                f"--pool={pool}",
                f"--hostname={name}",
                "--without-gossip",
                "--without-mingle",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        worker = WorkerProcess(name=name, proc=proc, log=log)
        self.workers.append(worker)
        return worker

    def wait_ready(self, timeout: float = 60) -> None:
        from worker.celery import app

        waiting = [w for w in self.workers if w.proc.poll() is None]
        names = {w.name for w in waiting}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            seen = {name for reply in replies for name in reply}
            if names <= seen:
                return
            for w in waiting:
                if w.proc.poll() is not None:
                    raise RuntimeError(f"worker {w.name} exited:\n{w.output()[-3000:]}")
        raise RuntimeError(
            "workers not ready:\n" + "\n".join(w.output()[-2000:] for w in self.workers)
        )

    def stop(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.kill(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(20)
            except subprocess.TimeoutExpired:
                w.kill(signal.SIGKILL)
                w.proc.wait(10)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
