"""Flower smoke test: a real worker and a real task seen through Flower's API, auth on."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_support import Fleet

pytestmark = pytest.mark.fleet

CREDENTIALS = "user:secret"
# Straight to 127.0.0.1, whatever http_proxy the environment has.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, credentials: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _opener.open(request, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Flower:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.base, self.log = proc, f"http://127.0.0.1:{port}", log

    def get(self, path: str, credentials: str | None = None) -> tuple[int, bytes]:
        return _get(self.base + path, credentials)

    def api(self, path: str) -> Any:
        status, body = self.get(path, CREDENTIALS)
        assert status == 200, f"GET {path} -> {status}: {body[:500]!r}"
        return json.loads(body)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def poll(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"flower exited {self.proc.returncode}:\n{self.output()}")
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{self.output()}")


@contextmanager
def running_flower(
    tmp_path: Path, args: list[str], extra_env: dict[str, str] | None = None
) -> Iterator[Flower]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env.update(extra_env or {})
    log = tmp_path / "flower.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            *args,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    flower = Flower(proc, port, log)
    try:

        def answers() -> bool:
            try:
                return flower.get("/healthcheck")[0] == 200  # unauthenticated by design
            except OSError:
                return False

        flower.poll(answers, 20, "flower to answer")
        yield flower
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_flower_sees_the_worker_and_a_task_with_basic_auth_on(fleet: Fleet, tmp_path: Path) -> None:
    from worker.celery import app

    worker = fleet.start_worker(concurrency=1)
    fleet.wait_ready()

    with running_flower(tmp_path, [f"--basic-auth={CREDENTIALS}"]) as flower:
        assert flower.get("/api/workers")[0] == 401
        assert flower.get("/api/tasks")[0] == 401
        assert flower.get("/api/workers", "user:wrong")[0] == 401

        flower.poll(
            lambda: worker.name in flower.api("/api/workers?refresh=1"),
            15,
            f"worker {worker.name} in /api/workers",
        )

        # Flower's event receiver connects in the background; a task finished before it
        # subscribed is never seen, so send another (a no-op relay) rather than sleep.
        sent: list[str] = []

        def succeeded() -> bool:
            tasks = flower.api("/api/tasks")
            return any(tasks.get(t, {}).get("state") == "SUCCESS" for t in sent)

        for _ in range(3):
            sent.append(app.send_task("balance.events.relay").id)
            try:
                flower.poll(succeeded, 8, f"one of tasks {sent} SUCCESS in /api/tasks")
                break
            except AssertionError:
                if len(sent) == 3 or flower.proc.poll() is not None:
                    raise
        tasks = flower.api("/api/tasks")
        task = next(tasks[t] for t in sent if tasks.get(t, {}).get("state") == "SUCCESS")
        assert task["name"] == "balance.events.relay"
        assert task["worker"] == worker.name


def test_flower_takes_basic_auth_from_its_environment_as_compose_sets_it(
    tmp_path: Path,
) -> None:
    """docker-compose.yml passes the credentials as FLOWER_BASIC_AUTH, not on the command."""
    with running_flower(tmp_path, [], {"FLOWER_BASIC_AUTH": CREDENTIALS}) as flower:
        assert flower.get("/api/workers")[0] == 401
        assert flower.get("/api/workers", CREDENTIALS)[0] == 200
