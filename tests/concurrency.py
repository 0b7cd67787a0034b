"""Run the same call from several threads released at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def at_once(call: Callable[[], T], copies: int, timeout: float = 60) -> list[T]:
    """`copies` threads wait on one barrier, then call; any error is raised here."""
    barrier = threading.Barrier(copies)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            result = call()
            with lock:
                results.append(result)
        except BaseException as exc:  # reported by the caller's thread below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    if errors:
        raise errors[0]
    assert len(results) == copies, f"{copies - len(results)} calls did not finish"
    return results
