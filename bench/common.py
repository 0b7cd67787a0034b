"""What every benchmark in bench/ does the same way: its own database on the local
PostgreSQL, the environment pointing the worker's modules at it, the server's version for
the table's heading, the ledger's audit after a run, and the worker's log kept off screen.

A benchmark runs as `python bench/<name>.py`, so this module is imported as `common`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
# A broker no in-process benchmark sends to (nothing is dispatched), apart from the fleet's.
IDLE_BROKER = "redis://127.0.0.1:6379/13"


def db_url(name: str) -> str:
    """The SQLAlchemy URL of the bench database `name`."""
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def plain_dsn(name: str) -> str:
    """The same database as a plain psycopg DSN (the anchors' connections)."""
    return db_url(name).replace("+psycopg", "")


def point_at(name: str) -> None:
    """Point every worker module at the bench database `name` before any of them is
    imported (no SMTP, an idle broker), and refuse to run if the settings resolve elsewhere:
    a benchmark drops and fills its database."""
    os.environ["DATABASE_URL"] = db_url(name)
    os.environ["BROKER_URL"] = IDLE_BROKER
    os.environ["RESULT_BACKEND"] = IDLE_BROKER
    os.environ.pop("SMTP_HOST", None)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from config import get_settings, reset_settings

    reset_settings()
    url = get_settings().effective_database_url
    if not url.endswith(f"/{name}"):
        raise SystemExit(f"refusing to run: DATABASE_URL resolved to {url}")


def fresh_database(name: str) -> None:
    """Drop and create the database `name`, migrate it to head, and close the migration's
    connections (DATABASE_URL must already name it: `point_at`)."""
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    from worker.db.migrate import upgrade
    from worker.db.session import dispose_engine

    upgrade()
    dispose_engine()


def pg_version() -> str:
    """The server's version, e.g. `15.19`."""
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def audit_ok() -> bool:
    """The ledger's audit (`balancectl audit`) of the bench database: True when it holds."""
    from worker.db.session import unit_of_work
    from worker.ledger import service as ledger

    with unit_of_work() as uow:
        return bool(ledger.audit(uow.session)["ok"])


def quiet_logs(path: str) -> None:
    """Write the worker's log (one line per fired alert or fee is part of a run's cost) to
    `path`, not to the screen the table is printed on."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("worker", "alembic"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
