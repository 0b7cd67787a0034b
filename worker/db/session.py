"""Engine per process and the unit of work every task and command runs in.

A prefork child must never use its parent's connections, so the engine is keyed by
PID and rebuilt lazily after fork. Follow-up work (Celery messages) is collected
during the transaction and dispatched only after COMMIT succeeds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from config import get_settings
from worker.kernel.dbpool import ping_when_idle

log = logging.getLogger(__name__)

Dispatch = Callable[[str, tuple[Any, ...], dict[str, Any]], None]

_engine: Engine | None = None
_engine_pid: int | None = None
_engine_url: str | None = None


def _configure_sqlite(engine: Engine) -> None:
    """SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE so a read-then-write never deadlocks."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def build_engine(url: str) -> Engine:
    settings = get_settings()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=1800,
    )
    ping_when_idle(engine)
    return engine


_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process's engine; built once even when many threads ask at the same moment."""
    url = get_settings().effective_database_url
    engine = _engine
    if engine is not None and _engine_pid == os.getpid() and _engine_url == url:
        return engine
    with _engine_lock:
        return _build_or_reuse(url)


def _build_or_reuse(url: str) -> Engine:
    global _engine, _engine_pid, _engine_url
    if _engine is None or _engine_pid != os.getpid() or _engine_url != url:
        if _engine is not None and _engine_pid == os.getpid():
            _engine.dispose()
        # After fork the inherited pool is abandoned, never closed: its sockets are the parent's.
        _engine = build_engine(url)
        _engine_pid = os.getpid()
        _engine_url = url
    return _engine


def dispose_engine() -> None:
    global _engine, _engine_pid, _engine_url
    if _engine is not None and _engine_pid == os.getpid():
        _engine.dispose()
    _engine = None
    _engine_pid = None
    _engine_url = None


def _no_dispatch(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    log.debug("follow-up %s not dispatched (no dispatcher)", name)


@dataclass
class UnitOfWork:
    """A DB session plus the follow-up messages to send once it has committed."""

    session: Session
    dispatch: Dispatch = _no_dispatch
    _after_commit: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    _queued: set[str] = field(default_factory=set)

    def enqueue(self, task_name: str, *args: Any, **kwargs: Any) -> None:
        """Send `task_name` after COMMIT (once per distinct call); dropped on rollback."""
        key = repr((task_name, args, sorted(kwargs.items())))
        if key not in self._queued:
            self._queued.add(key)
            self._after_commit.append((task_name, args, kwargs))

    def commit(self) -> None:
        self.session.commit()
        pending, self._after_commit = self._after_commit, []
        self._queued = set()
        for name, args, kwargs in pending:
            try:
                self.dispatch(name, args, kwargs)
            except Exception as exc:  # the database is the truth; a beat job catches up
                log.warning(
                    "could not enqueue %s after commit (%s: %s); the next scheduled run will",
                    name,
                    type(exc).__name__,
                    exc,
                )

    def rollback(self) -> None:
        self._after_commit.clear()
        self._queued.clear()
        self.session.rollback()


_factories: dict[int, tuple[Engine, sessionmaker[Session]]] = {}


def _session_factory(engine: Engine) -> sessionmaker[Session]:
    """One sessionmaker per engine: building one makes a Session subclass and sets up its
    events, about a tenth of a millisecond-scale debit's own time (issue 16)."""
    found = _factories.get(id(engine))
    if found is None or found[0] is not engine:
        found = _factories[id(engine)] = (
            engine,
            sessionmaker(bind=engine, expire_on_commit=False),
        )
    return found[1]


@contextmanager
def unit_of_work(dispatch: Dispatch = _no_dispatch) -> Iterator[UnitOfWork]:
    """Commit on success, roll back on any error, always close."""
    session = _session_factory(get_engine())()
    uow = UnitOfWork(session=session, dispatch=dispatch)
    try:
        yield uow
        uow.commit()
    except BaseException:
        uow.rollback()
        raise
    finally:
        session.close()
