"""The debit's pipelined lock and look-up (worker/ledger/service.py `lock_account_and_find`)
hands back objects as a query would: loaded, clean, in the session's identity map, so
nothing is written for them unless a rule changes them, and a change is written."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event

from worker.accounts import service as accounts
from worker.db.session import get_engine, unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.ledger.models import Account, LedgerTransaction
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def _funded() -> str:
    with unit_of_work() as uow:
        account_id = str(accounts.create(uow, name="pipelined", now=now())["id"])
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="10.00", reason="seed", now=now())
    return account_id


def test_the_locked_account_and_found_transaction_are_loaded_clean_objects() -> None:
    if get_engine().dialect.name != "postgresql":
        pytest.skip("the pipelined read is PostgreSQL's")
    account_id = _funded()
    with unit_of_work() as uow:
        first = usage.debit(uow, account_id=account_id, amount="1.25", reference="r1", now=now())
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(get_engine(), "before_cursor_execute", seen)
    try:
        with unit_of_work() as uow:
            account, found = ledger.lock_account_and_find(uow.session, account_id, usage.KIND, "r1")
            assert isinstance(account, Account) and isinstance(found, LedgerTransaction)
            assert uow.session.get(Account, account_id) is account  # in the identity map
            assert account.balance == Decimal("8.75") and account.currency == "EUR"
            assert found.id == first["transaction_id"] and found.amount == Decimal("-1.25")
            assert not uow.session.dirty and not uow.session.new
            uow.session.flush()
            assert statements == []  # nothing to write for objects read as they are
            account.name = "renamed"  # a change is tracked and written
            assert account in uow.session.dirty
            uow.session.flush()
            assert len(statements) == 1 and statements[0].startswith("UPDATE accounts")
    finally:
        event.remove(get_engine(), "before_cursor_execute", seen)
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).name == "renamed"
