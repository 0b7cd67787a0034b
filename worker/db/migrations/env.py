"""Alembic environment: the URL comes from Settings (or a connection handed in by tests)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from worker.db.session import get_engine
from worker.models import Base

target_metadata = Base.metadata
# Tables that are not ours: the sandbox PSP stubs keep their "remote side" beside us.
FOREIGN_TABLES = {"psp_stub_remote_charges"}


def _include(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=_include,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with get_engine().connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection
        if sqlite and raw is not None:
            # Batch mode rebuilds a table (copy, drop, rename): with foreign keys on, the
            # drop fails as soon as other rows point at the table. The pragma only works
            # outside a transaction, so it is set on the raw connection before BEGIN.
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            _run(conn)
            conn.commit()
            if sqlite and raw is not None:
                broken = raw.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")
        finally:
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():  # pragma: no cover
    raise SystemExit("offline migrations are not supported; run `balancectl db upgrade`")
run_migrations_online()
