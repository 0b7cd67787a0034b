"""The migrations build exactly the schema the models describe (PostgreSQL and SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from worker.db.session import get_engine
from worker.models import Base

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

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


def test_embedded_database_with_data_upgrades_through_the_app_engine(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A used embedded install (rows pointing at rebuilt tables) upgrades to head."""
    from sqlalchemy import text

    from config import reset_settings
    from worker.db import session as db_session
    from worker.db.migrate import upgrade

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'used.db'}")
    reset_settings()
    db_session.dispose_engine()
    try:
        upgrade("0003")
        with db_session.get_engine().begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, name, currency, country, status, emails, locale,"
                    " display_currency, balance, auto_reload_enabled, auto_reload_declines,"
                    " alerts_enabled, created_at, updated_at) VALUES ('acc_1', 'Used', 'EUR',"
                    " 'GB', 'active', '[]', 'en', 'EUR', 5000000, 0, 0, 0, 0, 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO ledger_accounts (id, code, currency, account_id, created_at)"
                    " VALUES (1, 'customer:acc_1', 'EUR', 'acc_1', 0),"
                    " (2, 'adjustments:EUR', 'EUR', NULL, 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO ledger_transactions (id, account_id, kind, reference, amount,"
                    " currency, balance_after, created_at) VALUES ('txn_1', 'acc_1',"
                    " 'adjustment', 'r1', 5000000, 'EUR', 5000000, 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO postings (transaction_id, ledger_account_id, amount) VALUES"
                    " ('txn_1', 1, 5000000), ('txn_1', 2, -5000000)"
                )
            )
        upgrade()
        with db_session.get_engine().connect() as conn:
            assert conn.execute(text("SELECT alert_state FROM accounts")).scalar_one() == "armed"
            assert conn.execute(text("SELECT count(*) FROM postings")).scalar_one() == 2
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
            assert conn.execute(text("PRAGMA foreign_key_check")).fetchall() == []
    finally:
        db_session.dispose_engine()
        monkeypatch.undo()
        reset_settings()
