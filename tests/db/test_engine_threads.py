"""With a thread pool, many tasks ask for the engine at the same moment: one engine each."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from config import get_settings
from worker.db import session as db_session
from worker.psp.sandbox import RemoteSide

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def _all_at_once(make: Callable[[], Any], n: int = 40) -> set[int]:
    barrier = threading.Barrier(n)
    seen: list[int] = []

    def run() -> None:
        barrier.wait()
        seen.append(id(make()))

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return set(seen)


def test_threads_share_one_database_engine() -> None:
    db_session.dispose_engine()
    assert len(_all_at_once(db_session.get_engine)) == 1


def test_threads_share_one_stub_remote_engine() -> None:
    RemoteSide._engines.clear()
    remote = RemoteSide(get_settings(), "braintree")
    assert len(_all_at_once(lambda: remote.engine)) == 1
