"""Pooled connections are tested before use only after sitting idle (not on every checkout):
one that died while idle (a database restart) is replaced, not handed to a task."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from config import get_settings
from worker.kernel.dbpool import ping_when_idle

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def _engine(idle_seconds: float) -> Engine:
    url = get_settings().effective_database_url
    if not url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (pg_terminate_backend)")
    engine = create_engine(url, pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_seconds=idle_seconds)
    return engine


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(pid: int) -> None:
    admin = create_engine(get_settings().effective_database_url)
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    admin.dispose()


def test_a_connection_that_died_while_idle_is_replaced_before_use() -> None:
    engine = _engine(idle_seconds=0)  # every checked-in connection counts as idle
    first = _backend_pid(engine)
    _kill(first)
    assert _backend_pid(engine) != first  # tested, found dead, replaced: no error
    engine.dispose()


def test_a_connection_in_steady_use_is_not_tested_so_a_dead_one_fails_once() -> None:
    engine = _engine(idle_seconds=3600)  # never idle long enough: no ping
    first = _backend_pid(engine)
    _kill(first)
    with pytest.raises(OperationalError):  # what the ping saves an idle connection from
        _backend_pid(engine)
    assert _backend_pid(engine) != first  # the pool dropped it; the retry reconnects
    engine.dispose()


def test_a_tested_connection_is_handed_over_outside_a_transaction() -> None:
    engine = _engine(idle_seconds=0)
    _backend_pid(engine)  # checked in: idle from now on
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:  # the stub PSP's engine: raises inside a transaction
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    engine.dispose()
