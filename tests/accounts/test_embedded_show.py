"""`accounts show` on SQLite without SQLAlchemy (worker/accounts/embedded.py, fast CLI of
issue 18) prints exactly what the ORM path prints, and hands every other case to it.

A SQLite database at the schema head holds a known usage history (one debit exactly at the
window's start, one just before it) and an account with every optional field set; both
reads are compared at several moments (time-machine for the ORM path's clock).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from typer.testing import CliRunner

from config import reset_settings
from worker.accounts import embedded
from worker.accounts import service as accounts
from worker.db import session as db_session
from worker.db.session import unit_of_work
from worker.ledger import adjustments
from worker.ledger.models import Account
from worker.usage import service as usage

T = datetime(2026, 11, 20, 9, 0, 0, 123456, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def sqlite_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from worker.db.migrate import upgrade

    path = tmp_path / "show.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+pysqlite:///{path}")
    reset_settings()
    db_session.dispose_engine()
    try:
        upgrade()
        yield path
    finally:
        db_session.dispose_engine()
        monkeypatch.undo()
        reset_settings()


def _history() -> str:
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(
                uow,
                name="Embedded Co",
                emails=["ops@example.com", "b@example.com"],
                company="Embedded KK",
                finance_email="fin@example.com",
                currency="JPY",
                now=T - 10 * DAY,
            )["id"]
        )
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="10000", reason="s", now=T - 9 * DAY)
    at_start = T - 7 * DAY
    debits = [("300", at_start - timedelta(microseconds=1)), ("700", at_start), ("55", T - DAY)]
    for n, (amount, at) in enumerate(debits):
        with unit_of_work() as uow:
            usage.debit(uow, account_id=account_id, amount=amount, reference=f"u{n}", now=at)
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        account.auto_reload_enabled = True
        account.auto_reload_threshold = Decimal("1000")
        account.auto_reload_amount = Decimal("5000.5")
        account.auto_reload_action_required_at = T - 2 * DAY
        account.alerts_enabled = True
        account.alert_threshold = Decimal("2000")
        account.alert_sent_at = T - 3 * DAY
        account.alert_state = "sent"
    return account_id


def _orm(account_id: str, moment: datetime) -> dict[str, Any]:
    with time_machine.travel(moment, tick=False), unit_of_work() as uow:
        return accounts.view(accounts.get(uow.session, account_id))


def test_the_sqlite_read_prints_what_the_orm_prints(sqlite_db: Path) -> None:
    account_id = _history()
    for moment in (T, T + DAY, T - timedelta(microseconds=1), T + 30 * DAY, T - 20 * DAY):
        fast = embedded.show(sqlite_db, account_id, moment)
        assert fast == _orm(account_id, moment), moment
    assert embedded.show(sqlite_db, account_id, T)["runway"]["spend"] == "755"  # type: ignore[index]


def test_the_cli_prints_the_same_document_on_sqlite(sqlite_db: Path) -> None:
    from worker.cli import app

    account_id = _history()
    with time_machine.travel(T, tick=False):
        result = CliRunner().invoke(app, ["accounts", "show", account_id, "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == _orm(account_id, T)
    missing = CliRunner().invoke(app, ["accounts", "show", "acc_nope", "--json"])
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["error"]["field"] == "account_id"


def test_other_cases_go_to_the_orm_path(sqlite_db: Path, tmp_path: Path) -> None:
    with unit_of_work() as uow:
        usd_shown = str(
            accounts.create(uow, name="Shown in USD", display_currency="USD", now=T)["id"]
        )
    assert embedded.show(sqlite_db, usd_shown, T) is None  # `display` needs worker/fx
    assert embedded.show(sqlite_db, "acc_nope", T) is None  # NotFound comes from the ORM path
    broken = tmp_path / "other.db"
    broken.write_bytes(b"not a database")
    assert embedded.show(broken, usd_shown, T) is None
