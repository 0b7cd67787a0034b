"""Debits sent through Redis to two real worker processes come out exact."""

from __future__ import annotations

from decimal import Decimal

import pytest
from celery import group

from tests.fleet_support import Fleet
from worker.accounts import service as accounts
from worker.celery import app
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.ledger import service as ledger

pytestmark = pytest.mark.fleet


def _funded_accounts(count: int, amount: str) -> list[str]:
    ids = []
    with unit_of_work() as uow:
        for i in range(count):
            ids.append(accounts.create(uow, name=f"fleet-{i}", now=now())["id"])
    for account_id in ids:
        with unit_of_work() as uow:
            adjustments.adjust(
                uow, account_id=account_id, amount=amount, reason="test funds", now=now()
            )
    return ids


def test_thousand_debits_over_ten_accounts_on_two_workers(fleet: Fleet) -> None:
    fleet.start_worker(concurrency=2)
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    ids = _funded_accounts(10, "100")

    sigs = [
        app.signature("balance.usage.debit", args=[ids[i % 10], "0.0057", f"msg-{i}"])
        for i in range(1000)
    ]
    results = group(sigs).apply_async().get(timeout=240)

    assert len(results) == 1000
    assert all(r["duplicate"] is False for r in results)
    assert {r["transaction_id"] for r in results}.__len__() == 1000
    with unit_of_work() as uow:
        for account_id in ids:
            account = accounts.get(uow.session, account_id)
            # 100 debits of 0.0057 each = exactly 0.57 off 100
            assert account.balance == Decimal("99.43")
        report = ledger.audit(uow.session)
    assert report["ok"], report
    assert report["transactions_checked"] == 1010


def test_fifty_concurrent_copies_of_one_debit_move_money_once(fleet: Fleet) -> None:
    fleet.start_worker(concurrency=4)
    fleet.start_worker(concurrency=4)
    fleet.wait_ready()
    [account_id] = _funded_accounts(1, "10")

    sigs = [
        app.signature("balance.usage.debit", args=[account_id, "1.25", "same-ref"])
        for _ in range(50)
    ]
    results = group(sigs).apply_async().get(timeout=120)

    assert sum(1 for r in results if not r["duplicate"]) == 1
    assert len({r["transaction_id"] for r in results}) == 1
    assert {r["balance"] for r in results} == {"8.75"}
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == Decimal("8.75")
        assert len(ledger.list_transactions(uow.session, account_id)) == 2
        assert ledger.audit(uow.session)["ok"]
