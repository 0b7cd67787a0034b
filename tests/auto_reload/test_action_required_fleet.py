"""3-D Secure with real worker processes (issue 17): sweeps sent twice at once and again for
an hour charge a card that needs the cardholder once; the account pauses, one event and one
mail; a new default method resumes it through the worker's own reload task."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from config import get_settings
from tests.auto_reload import support as s
from tests.fleet_support import Fleet, wait_for
from worker.accounts import service as accounts
from worker.auto_reload import configure
from worker.celery import app
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.outbox.models import Event, Mail
from worker.payment_methods import service as payment_methods
from worker.psp.sandbox import RemoteSide

pytestmark = pytest.mark.fleet

SWEEP = s.SWEEP


def _count(model: Any, account_id: str, kind: str) -> int:
    column = model.type if model is Event else model.kind
    with unit_of_work() as uow:
        return len(
            list(
                uow.session.scalars(
                    select(model).where(model.account_id == account_id, column == kind)
                )
            )
        )


def _send(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    app.send_task(name, args=list(args), kwargs=kwargs)


def test_a_reload_needing_the_cardholder_pauses_once_and_a_new_default_resumes_it(
    fleet: Fleet,
) -> None:
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(
                uow, name="fleet 3ds", emails=["ops@example.com"], locale="ja", now=now()
            )["id"]
        )
    with unit_of_work() as uow:
        card = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{uuid.uuid4().hex}",
            now=now(),
        )["id"]
    with unit_of_work() as uow:  # the sandbox: 2099.00 needs the cardholder
        configure.configure(uow, account_id=account_id, threshold="10", amount="2099.00", now=now())
    fleet.start_worker(concurrency=2)
    fleet.wait_ready()

    t0 = now() + timedelta(minutes=1)
    first = [
        app.send_task("balance.auto_reload.sweep", kwargs={"as_of": t0.isoformat()})
        for _ in range(2)
    ]
    assert sorted(int(r.get(timeout=30)["due"]) for r in first) in ([0, 1], [1, 1])
    wait_for(
        lambda: [c.status for c in s.charges(account_id)] == ["requires_action"],
        30,
        "the reload to need the cardholder",
    )
    # An hour of sweeps: nothing is due, nothing is charged again.
    for i in range(1, 11):
        at = (t0 + i * SWEEP).isoformat()
        result = app.send_task("balance.auto_reload.sweep", kwargs={"as_of": at})
        assert int(result.get(timeout=30)["due"]) == 0
    [charge] = s.charges(account_id)
    assert (charge.payment_method_id, charge.attempts, charge.decline_code) == (card, 1, "2099")
    remote = RemoteSide(get_settings(), "braintree")
    assert remote.count(charge.idempotency_key) == 1
    assert _count(Event, account_id, "auto_reload.action_required") == 1
    assert _count(Mail, account_id, "auto_reload.action_required") == 1

    # The customer adds the card afresh as the default: the worker reloads at once with it
    # (the same sandbox amount needs the cardholder again: a second pause, a second mail).
    with unit_of_work(dispatch=_send) as uow:
        fresh = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{uuid.uuid4().hex}",
            make_default=True,
            now=now(),
        )["id"]

    def resumed() -> list[Charge]:  # made at the real time: before t0, the replayed sweeps'
        return [c for c in s.charges(account_id) if c.id != charge.id]

    wait_for(lambda: [c.status for c in resumed()] == ["requires_action"], 30, "the resumed reload")
    assert resumed()[0].payment_method_id == fresh
    assert _count(Event, account_id, "auto_reload.resumed") == 1
    assert _count(Event, account_id, "auto_reload.action_required") == 2
    assert _count(Mail, account_id, "auto_reload.action_required") == 2
    assert remote.count() >= 2
