"""Fees with real worker processes: concurrent renewal runs pay each fee once, and a fee
that failed for lack of funds is paid within seconds of a credit (seed 003: retried when
funds arrive, not on a timer)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from celery import group
from sqlalchemy import func, select

from tests.fleet_support import Fleet, wait_for
from worker.accounts import service as accounts
from worker.celery import app
from worker.db.session import unit_of_work
from worker.kernel import task_names
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.ledger.models import LedgerTransaction
from worker.numbers import service as numbers
from worker.outbox.models import Event, Mail

pytestmark = pytest.mark.fleet

PAYING = 30


def _rented(i: int, balance: str, anchor: datetime) -> tuple[str, str]:
    """An account whose number was rented a month ago: its first renewal is due now."""
    with unit_of_work() as uow:
        account_id: str = accounts.create(
            uow, name=f"Fleet numbers {i}", emails=[f"ops{i}@example.com"], now=anchor
        )["id"]
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount=balance, reason="seed", now=anchor)
    with unit_of_work() as uow:
        number_id: str = numbers.rent(
            uow,
            account_id=account_id,
            msisdn=f"+4474001234{i:02d}",
            country="GB",
            monthly_fee="5",
            now=anchor,
        )["id"]
    return account_id, number_id


def _fees(reference: str | None = None) -> Counter[str]:
    with unit_of_work() as uow:
        query = select(LedgerTransaction.reference).where(LedgerTransaction.kind == numbers.KIND)
        if reference is not None:
            query = query.where(LedgerTransaction.reference == reference)
        return Counter(uow.session.scalars(query))


def _count(model: type[Event] | type[Mail], **where: str) -> int:
    with unit_of_work() as uow:
        column = model.type if model is Event else model.kind  # type: ignore[union-attr]
        query = select(func.count()).select_from(model).where(column == where["kind"])
        query = query.where(model.account_id == where["account_id"])
        return int(uow.session.scalar(query) or 0)


def test_concurrent_runs_pay_once_and_a_credit_pays_the_failed_fee_within_seconds(
    fleet: Fleet,
) -> None:
    anchor = now() - timedelta(days=31)  # renewal = anchor + 1 month: 0-3 days ago
    for i in range(PAYING):
        _rented(i, "50", anchor)
    poor, poor_number = _rented(99, "7", anchor)  # 2 left after the first month
    assert len(_fees()) == PAYING + 1

    # Three runs of the job queued before any worker starts: they race for the same rows.
    pending = group(
        [app.signature(task_names.FEES_COLLECT, kwargs={"as_of": None}) for _ in range(3)]
    ).apply_async()
    env = {"FEES_BATCH_SIZE": "4", "NUMBER_GRACE_DAYS": "10"}
    fleet.start_worker(concurrency=2, extra_env=env)
    fleet.start_worker(concurrency=2, extra_env=env)
    fleet.wait_ready()
    runs = pending.get(timeout=60)
    assert sum(r["paid"] for r in runs) == PAYING
    assert sum(r["errors"] for r in runs) == 0
    paid = _fees()
    assert len(paid) == 2 * PAYING + 1 and set(paid.values()) == {1}  # each period once
    assert _fees(f"{poor_number}:1") == Counter()
    assert _count(Event, kind="fee.payment_failed", account_id=poor) == 1
    assert _count(Mail, kind="fee.payment_failed", account_id=poor) == 1

    # The credit arrives: its commit enqueues the collection for the account.
    started = time.monotonic()
    app.send_task(task_names.LEDGER_ADJUST, args=[poor, "10", "bank transfer received"])
    wait_for(lambda: bool(_fees(f"{poor_number}:1")), 15, "the failed fee paid after the credit")
    elapsed = time.monotonic() - started
    print(f"credit -> fee paid in {elapsed:.2f} s")
    assert elapsed < 10
    time.sleep(2)  # a second collection (a redelivery, the next beat tick) would land now
    assert _fees(f"{poor_number}:1") == Counter({f"{poor_number}:1": 1})
    assert _count(Event, kind="fee.payment_failed", account_id=poor) == 1
