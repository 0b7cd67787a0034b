"""`balancectl info`: what this command talks to, without creating or changing anything."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from worker.cli.common import JsonFlag, app, emit, one_line, settings_or_exit, sqlite_file

# How long `info` waits for a server database before it says `unreachable`, in seconds.
CONNECT_TIMEOUT_SECONDS = 5


def hide_password(url: str) -> str:
    """A database or broker URL with its password (and any `password=` parameter) masked."""
    from kombu.utils.url import maybe_sanitize_url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return str(maybe_sanitize_url(url, mask="***"))
    query = {k: ("***" if "password" in k.lower() else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("balance-worker")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _read_revision(database_url: str, file: Path | None) -> tuple[str, str | None, str | None]:
    """(status, revision, error) of the database, reading only.

    A SQLite file is opened read-only (`mode=ro`), so a missing one stays missing; a server
    database gets a short connect timeout and a connection of its own (no pool)."""
    from sqlalchemy import Engine, create_engine
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from worker.db.migrate import current_revision

    engine: Engine
    if file is not None:
        if not file.exists():
            return "missing", None, None
        uri = file.as_uri() + "?mode=ro"
        engine = create_engine(
            "sqlite+pysqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=CONNECT_TIMEOUT_SECONDS),
            poolclass=NullPool,
        )
    else:
        engine = create_engine(
            database_url,
            poolclass=NullPool,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
    try:
        with engine.connect() as connection:
            revision = current_revision(connection)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        return "unreachable", None, one_line(exc)
    finally:
        engine.dispose()
    return ("ok" if revision is not None else "no_schema"), revision, None


def describe() -> dict[str, Any]:
    """Where this process's commands go: the database (password hidden), the broker,
    BALANCE_HOME, the schema revision in the database (null: none yet), the package version.

    More than the contract's fields: `embedded` (bool), `database_status` (`ok`, `outdated`:
    older than this code, `no_schema`, `missing`: no database file yet, `unreachable`),
    `database_error` (one line, or null), `schema_head` (the revision this code migrates
    to)."""
    from config import get_settings
    from worker.db.migrate import head_revisions

    settings = get_settings()
    url = settings.effective_database_url
    status, revision, error = _read_revision(url, sqlite_file(url))
    head = ",".join(head_revisions())
    if status == "ok" and revision != head:
        status = "outdated"
    return {
        "database": hide_password(url),
        "broker": hide_password(settings.effective_broker_url),
        "balance_home": str(settings.balance_home.resolve()),
        "schema_revision": revision,
        "version": package_version(),
        "embedded": settings.embedded,
        "database_status": status,
        "database_error": error,
        "schema_head": head,
    }


@app.command("info")
def info(as_json: JsonFlag = False) -> None:
    """What this command talks to: database (password hidden), broker, BALANCE_HOME, schema
    revision and version. Creates nothing, changes nothing; exit 0 even when the database
    is missing or unreachable (`database_status` says so)."""
    settings_or_exit(as_json)
    emit(describe(), as_json)
