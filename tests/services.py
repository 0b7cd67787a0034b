"""Real PostgreSQL and Redis for the test session.

Order (DESIGN.md §4): DATABASE_URL / BROKER_URL when given; else the local services on
127.0.0.1 when reachable; else throwaway servers started here from the OS's binaries
(initdb refuses root, so PostgreSQL runs as an unprivileged user) and stopped after.
Each session gets its own database and its own Redis database number, so a killed
worker's leftovers never leak into the next run. BALANCE_TEST_THROWAWAY=1 forces the
throwaway path (to prove it works on a machine without services).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import URL, make_url

LOCAL_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LOCAL_REDIS = "redis://127.0.0.1:6379/15"
UNPRIVILEGED = "nobody"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise RuntimeError(
        f"no PostgreSQL server available: set DATABASE_URL, start one on 127.0.0.1:5432, "
        f"or install the server binaries (Debian: apt-get install postgresql) so tests can "
        f"start a throwaway one ({name} not found)"
    )


def _as_user_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    if runuser and runuser.endswith("runuser"):
        return [runuser, "-u", UNPRIVILEGED, "--"]
    if runuser:
        return [runuser, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    raise RuntimeError("running as root and neither runuser nor setpriv is available for initdb")


@dataclass
class Services:
    pg_server_url: URL
    redis_server_url: str
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    database_url: str = ""
    broker_url: str = ""
    _redis_claim: tuple[str, str] | None = None

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop a test service: {exc}")


def _start_throwaway_postgres(stoppers: list[Callable[[], None]]) -> URL:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="bw-pg-"))
    data = root / "data"
    prefix = _as_user_prefix()
    if prefix:
        os.chmod(root, 0o777)
    port = _free_port()
    subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *prefix,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c max_connections=200",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)

    stoppers.append(stop)
    _wait(lambda: _reachable("127.0.0.1", port), "throwaway PostgreSQL")
    return make_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")


def _start_throwaway_redis(stoppers: list[Callable[[], None]]) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "no Redis available: set BROKER_URL, start one on 127.0.0.1:6379, or install "
            "redis-server (Debian: apt-get install redis-server) so tests can start a throwaway one"
        )
    root = Path(tempfile.mkdtemp(prefix="bw-redis-"))
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)

    stoppers.append(stop)
    _wait(lambda: _reachable("127.0.0.1", port), "throwaway Redis")
    return f"redis://127.0.0.1:{port}/0"


def start() -> Services:
    force = os.environ.get("BALANCE_TEST_THROWAWAY") == "1"
    stoppers: list[Callable[[], None]] = []
    given_db = os.environ.get("DATABASE_URL")
    if given_db and not force:
        pg = make_url(given_db).set(drivername="postgresql+psycopg")
    elif not force and _reachable("127.0.0.1", 5432):
        pg = make_url(LOCAL_PG)
    else:
        pg = _start_throwaway_postgres(stoppers)
    given_broker = os.environ.get("BROKER_URL")
    if given_broker and not force:
        rds = given_broker
    elif not force and _reachable("127.0.0.1", 6379):
        rds = LOCAL_REDIS
    else:
        rds = _start_throwaway_redis(stoppers)
    services = Services(pg_server_url=pg, redis_server_url=rds, stoppers=stoppers)
    try:
        _create_session_database(services)
        _claim_redis_db(services)
    except BaseException:
        services.stop()
        raise
    return services


def _admin_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _create_session_database(services: Services) -> None:
    name = f"bw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_dsn(services.pg_server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(_admin_dsn(services.pg_server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    services.stoppers.append(drop)
    services.database_url = services.pg_server_url.set(database=name).render_as_string(
        hide_password=False
    )


def _claim_redis_db(services: Services) -> None:
    """Claim a free Redis database number (a key in db 0 marks it) and empty it.

    A number some live client is connected to is skipped even when unclaimed: a worker left
    running by a killed test session would otherwise take this session's tasks and events
    (a stale relay ending this session's backlog episode, say)."""
    base = services.redis_server_url.rsplit("/", 1)[0]
    control = redis.Redis.from_url(f"{base}/0")
    token = uuid.uuid4().hex
    preferred = int(services.redis_server_url.rsplit("/", 1)[1] or 15)
    busy = {int(client.get("db", 0)) for client in control.client_list()}
    for number in [preferred, *range(14, 0, -1)]:
        if number == 0 or number in busy:
            continue
        key = f"balance-worker:test-db-claim:{number}"
        if control.set(key, token, nx=True, ex=4 * 3600):
            redis.Redis.from_url(f"{base}/{number}").flushdb()

            def release(key: str = key, number: int = number) -> None:
                redis.Redis.from_url(f"{base}/{number}").flushdb()
                if control.get(key) == token.encode():
                    control.delete(key)

            services.stoppers.append(release)
            services.broker_url = f"{base}/{number}"
            return
    raise RuntimeError("no free Redis database number (1-15) to claim for this test session")
