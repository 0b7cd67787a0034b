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


def test_five_concurrent_batches_in_different_orders_on_real_workers(fleet: Fleet) -> None:
    """debit_many (issue 16): five messages over the same accounts, each meeting them in its
    own order, run at once by real worker processes: no deadlock, exact balances."""
    import random

    fleet.start_worker(concurrency=3)
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    ids = _funded_accounts(20, "100")
    batches = []
    for n in range(5):
        debits = [
            {"account_id": ids[i], "amount": "0.0057", "reference": f"b{n}-{i}-{k}"}
            for i in range(20)
            for k in range(10)
        ]
        random.Random(n).shuffle(debits)
        batches.append(debits)
    sigs = [app.signature("balance.usage.debit_many", kwargs={"debits": b}) for b in batches]
    replies = group(sigs).apply_async().get(timeout=120)
    assert [r["ok"] for r in replies] == [200] * 5
    # The same five again (a redelivery): all duplicates, nothing moves.
    again = group(sigs).apply_async().get(timeout=120)
    assert [r["duplicate"] for r in again] == [200] * 5
    with unit_of_work() as uow:
        for account_id in ids:
            assert accounts.get(uow.session, account_id).balance == Decimal("99.715")  # 50 x
        report = ledger.audit(uow.session)
    assert report["ok"], report
    assert report["transactions_checked"] == 20 + 1000


def test_the_batcher_through_redis_to_real_workers(fleet: Fleet) -> None:
    from worker.client import DebitBatcher

    fleet.start_worker(concurrency=2)
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    ids = _funded_accounts(10, "10")
    with DebitBatcher(app, max_batch=100, max_wait_ms=20) as batcher:
        futures = [batcher.submit(ids[i % 10], "0.01", f"m-{i}") for i in range(500)]
        repeats = [batcher.submit(ids[i % 10], "0.01", f"m-{i}") for i in range(10)]
        results = [f.result(timeout=120) for f in futures]
        repeated = [f.result(timeout=120) for f in repeats]
    assert {r["status"] for r in results} == {"ok"}
    assert [r["reference"] for r in results] == [f"m-{i}" for i in range(500)]
    assert {r["status"] for r in repeated} == {"duplicate"}
    with unit_of_work() as uow:
        for account_id in ids:
            assert accounts.get(uow.session, account_id).balance == Decimal("9.50")
        assert ledger.audit(uow.session)["ok"]
