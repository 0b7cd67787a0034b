"""A prefork child never uses its parent's DB connections."""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import Connection

import pytest
from sqlalchemy import text

from worker.db import session as db_session

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def _child(conn: Connection) -> None:
    engine = db_session.get_engine()
    with engine.connect() as c:
        backend_pid = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
    conn.send((id(engine), backend_pid))
    conn.close()


def test_child_process_builds_its_own_engine_and_connection() -> None:
    parent_engine = db_session.get_engine()
    # Hold one connection across the fork: the child inherits its socket and must neither
    # use it nor close it (closing would terminate the parent's server session).
    with parent_engine.connect() as held:
        parent_backend = held.execute(text("SELECT pg_backend_pid()")).scalar_one()

        ctx = mp.get_context("fork")
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(writer,))
        proc.start()
        child_engine_id, child_backend = reader.recv()
        proc.join(30)

        assert proc.exitcode == 0
        assert child_engine_id != id(parent_engine)
        assert child_backend != parent_backend
        # The very same connection still works after the child exited.
        assert held.execute(text("SELECT pg_backend_pid()")).scalar_one() == parent_backend
