"""The migrations build exactly the schema the models describe (PostgreSQL and SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from worker.db.models import Base
from worker.db.session import get_engine

FOREIGN_TABLES = {"psp_stub_remote_charges"}  # as in worker/db/migrations/env.py


def _include(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


def _diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": _include}
    )
    return list(compare_metadata(context, Base.metadata))


def test_postgres_schema_matches_models() -> None:
    with get_engine().connect() as conn:
        assert _diff(conn) == []


def test_sqlite_schema_matches_models(tmp_path: Path, monkeypatch: Any) -> None:
    from alembic import command

    from worker.db.migrate import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.begin() as conn:
        config = alembic_config(conn)
        command.upgrade(config, "head")
    with engine.connect() as conn:
        assert _diff(conn) == []
