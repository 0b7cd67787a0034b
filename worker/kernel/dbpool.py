"""Connection-pool hygiene shared by our engine and the sandbox PSP's own engine."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

IDLE_PING_SECONDS = 10.0


def ping_when_idle(engine: Engine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Test a pooled connection before use only when it sat idle for `idle_seconds`.

    `pool_pre_ping` pays a round trip on every checkout (three per auto-reload, ~6% of its
    CPU). A connection in steady use has just proved itself; one that sat idle across a
    database restart is tested and replaced (SQLAlchemy's documented pessimistic
    checkout pattern: DisconnectionError makes the pool connect afresh). A connection that
    dies while in use fails its statement either way; SQLAlchemy then drops the whole pool
    and the task's retry reconnects.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # just connected, or in steady use
        try:
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_conn.rollback()  # hand it over outside a transaction (autocommit can be set)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc
