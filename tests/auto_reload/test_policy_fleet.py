"""The soft-failure policy with a real worker process: beat's sweeps replayed `as_of`
successive moments, every six minutes, on a reload amount the PSP never processes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.auto_reload import support as s
from tests.fleet_support import Fleet, wait_for
from worker.accounts import service as accounts
from worker.auto_reload import configure
from worker.celery import app
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.outbox.models import Event, Mail
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.fleet

SWEEP = s.SWEEP


def test_sweeps_on_a_soft_failing_amount_back_off_and_tell_the_customer_once(
    fleet: Fleet,
) -> None:
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(uow, name="fleet soft", emails=["ops@example.com"], now=now())["id"]
        )
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{uuid.uuid4().hex}",
            now=now(),
        )
    with unit_of_work() as uow:  # processor unavailable: not_attempted, code 3000
        configure.configure(uow, account_id=account_id, threshold="10", amount="3000.50", now=now())
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()
    attempts = 0

    def tick(at: datetime) -> int:
        """One beat tick as of `at`; waits until the worker has recorded the PSP's answer."""
        nonlocal attempts
        result = app.send_task("balance.auto_reload.sweep", kwargs={"as_of": at.isoformat()})
        due = int(result.get(timeout=30)["due"])
        if due:
            attempts += 1

            def recorded() -> bool:
                made = s.charges(account_id)
                return sum(c.attempts for c in made) == attempts and all(
                    c.status != "processing" for c in made
                )

            wait_for(recorded, 30, f"PSP attempt {attempts}")
        return due

    t0 = now() + timedelta(minutes=1)
    due = [at for at in (t0 + i * SWEEP for i in range(21)) if tick(at)]  # two hours
    assert [int((at - t0) / SWEEP) for at in due] == [0, 1, 2, 3, 13, 14, 15, 16]
    made = s.charges(account_id)
    assert [(c.status, c.attempts) for c in made] == [("failed", 4), ("failed", 4)]
    account = s.get(account_id)
    assert account.auto_reload_backoff_until == t0 + timedelta(minutes=96, hours=2)
    assert (account.auto_reload_enabled, account.auto_reload_declines) == (True, 0)

    # The third charge in a row, when the back-off ends: the customer is told, once.
    resume = account.auto_reload_backoff_until
    assert tick(resume - timedelta(minutes=1)) == 0
    for i in range(4):
        assert tick(resume + i * SWEEP) == 1
    assert tick(resume + 4 * SWEEP) == 0  # backing off 4 h now
    with unit_of_work() as uow:
        failing = list(
            uow.session.scalars(
                select(Event).where(
                    Event.type == "auto_reload.failing", Event.account_id == account_id
                )
            )
        )
        mails = list(uow.session.scalars(select(Mail).where(Mail.account_id == account_id)))
        assert [e.data["failures"] for e in failing] == [3]
        assert [m.kind for m in mails] == ["auto_reload.failing"]
    assert s.get(account_id).auto_reload_backoff_until == resume + 3 * SWEEP + timedelta(hours=4)
    assert attempts == 12
