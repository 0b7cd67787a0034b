from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import service as ledger
from worker.outbox import events

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def test_events_of_one_transaction_are_published_in_the_order_they_were_written() -> None:
    moment = now()
    with unit_of_work() as uow:
        for n in range(20):
            events.record(uow, f"test.step{n:02d}", None, {"n": n}, moment)
    published: list[dict[str, Any]] = []
    with unit_of_work() as uow:
        events.relay(uow, published.append, moment)
    assert [m["data"]["n"] for m in published] == list(range(20))


def test_audit_reports_an_account_without_its_ledger_account() -> None:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="orphan", now=now())["id"]
    with unit_of_work() as uow:
        uow.session.execute(
            text("DELETE FROM ledger_accounts WHERE account_id = :a"), {"a": account_id}
        )
    with unit_of_work() as uow:
        report = ledger.audit(uow.session)
    assert report["ok"] is False
    assert report["mismatches"] == [
        {
            "account_id": account_id,
            "cached": "0.00",
            "postings": "0.00",
            "problem": "no ledger account",
        }
    ]
    assert report["accounts_checked"] == 1
