"""One `balancectl run` per BALANCE_HOME: an OS lock on BALANCE_HOME/run.lock.

The embedded beat has no distributed lock (RedBeat needs Redis), so two `balancectl run`
on one home would run every scheduled job twice. The lock is `flock(2)`: the kernel drops
it when the holder dies, `kill -9` included, so a stale file never blocks a restart. The
file holds the holder's pid, for the refusal message only (the lock, not the file, is the
truth).

The worker's pool processes inherit the lock (they die with the main process: Celery sets
their parent-death signal); the embedded beat closes it on start, and `die_with_parent`
makes it exit with the main process too, so no orphaned beat outlives a `kill -9`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path

from worker.kernel.errors import InstanceRunning

LOCK_FILE = "run.lock"


def taken(home: Path, pid: int | None) -> InstanceRunning:
    holder = f"pid {pid}" if pid is not None else "pid unknown"
    return InstanceRunning(
        "BALANCE_HOME",
        f"another balancectl run ({holder}) already runs on {home}; stop it first, or give "
        "this one another BALANCE_HOME",
    )


# The open lock file of this process: kept referenced so it is never closed (closing it
# would release the lock while the worker still runs).
_held: int | None = None


def acquire(home: Path) -> None:
    """Take BALANCE_HOME's run lock for the life of this process, or raise InstanceRunning
    (field `BALANCE_HOME`, the holder's pid in the message).

    `home` must exist. Never waits: a second instance is refused at once."""
    global _held
    path = home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise taken(home, pid) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held = fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def die_with_parent(parent_pid: int) -> None:
    """In a child process (the embedded beat): exit when `parent_pid` is gone.

    Linux sends SIGKILL at the parent's death (prctl PR_SET_PDEATHSIG, as Celery does for
    its pool); elsewhere, and for a parent that died before the signal was armed, a thread
    checks the parent once a second."""
    from celery import platforms

    platforms.set_pdeathsig("SIGKILL")
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
