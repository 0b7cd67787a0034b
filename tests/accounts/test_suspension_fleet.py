"""An operator suspension against debits in flight on real worker processes (issue 18).

Debits race the suspension on the account's row lock: every debit committed before the
suspension stands, every one after it is refused with `account_suspended`, and no money
moves in between; after `resume` the refused ones go through when sent again.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from celery import group
from sqlalchemy import select

from tests.fleet_support import Fleet
from worker.accounts import admin
from worker.accounts import service as accounts
from worker.celery import app
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.ledger.models import LedgerTransaction
from worker.outbox.models import Event

pytestmark = pytest.mark.fleet


def test_debits_racing_a_suspension_stop_at_it_and_resume_after(fleet: Fleet) -> None:
    fleet.start_worker(concurrency=2)
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    with unit_of_work() as uow:
        account_id = str(accounts.create(uow, name="Race Co", now=now())["id"])
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="100", reason="funds", now=now())

    sigs = [
        app.signature("balance.usage.debit", args=[account_id, "0.5", f"m-{i}"]) for i in range(60)
    ]
    pending = group(sigs).apply_async()
    with unit_of_work() as uow:  # while the workers take them
        admin.suspend(uow, account_id=account_id, reason="race", now=now())
    # The suspension's `now` is read before it waits for the account's lock, so a debit that
    # held the lock then may be stamped after it; what no accepted debit can be is later than
    # the suspension's commit (a debit locking after it is refused).
    committed = now()
    results = pending.get(timeout=180, propagate=False)

    ok = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if not isinstance(r, dict)]
    assert len(ok) + len(refused) == 60
    assert all("account_id" in str(r) and "suspended" in str(r) for r in refused)
    with unit_of_work() as uow:
        account = accounts.get(uow.session, account_id)
        assert account.balance == Decimal("100") - Decimal("0.5") * len(ok)
        assert (account.status, account.suspension_reason) == ("suspended", "admin")
        assert uow.session.scalars(
            select(Event.occurred_at).where(
                Event.account_id == account_id, Event.type == "account.suspended"
            )
        ).one()
        usage = list(
            uow.session.scalars(
                select(LedgerTransaction.created_at).where(
                    LedgerTransaction.account_id == account_id,
                    LedgerTransaction.kind == "usage_debit",
                )
            )
        )
        assert len(usage) == len(ok)
        assert all(moment <= committed for moment in usage)  # none after the suspension
        assert ledger.audit(uow.session)["ok"]

    with unit_of_work() as uow:
        admin.resume(uow, account_id=account_id, now=now())
    again = group(sigs).apply_async().get(timeout=180)
    assert sum(1 for r in again if not r["duplicate"]) == len(refused)
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == Decimal("70")
