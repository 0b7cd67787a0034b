"""While the PSP is called, the worker holds no database connection (a 300 ms PSP would
otherwise pin a pooled connection idle-in-transaction for every charge in flight), and the
janitor no connection and no row lock while it looks a charge up."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from sqlalchemy import select, text, update

from config import get_settings
from tests.concurrency import at_once
from worker.accounts import service as accounts
from worker.auto_reload import batch, configure
from worker.charges import engine as charges
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import get_engine, unit_of_work
from worker.kernel.clock import now
from worker.ledger import service as ledger
from worker.payment_methods import service as payment_methods
from worker.psp.base import ChargeResult, Outcome
from worker.psp.registry import get_adapter

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


@pytest.fixture
def checked_out_during_charge(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    adapter_cls = type(get_adapter("braintree"))
    original = adapter_cls.charge

    def spy(self: Any, request: Any) -> ChargeResult:
        seen.append(get_engine().pool.checkedout())  # type: ignore[attr-defined]
        return original(self, request)

    monkeypatch.setattr(adapter_cls, "charge", spy)
    return seen


def _account() -> str:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="pool", now=now())["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce="fake-valid-visa-nonce:pool",
            now=now(),
        )
    return account_id


def test_top_up_holds_no_connection_during_the_psp_call(
    checked_out_during_charge: list[int],
) -> None:
    account_id = _account()
    with unit_of_work() as uow:
        assert (
            top_ups.top_up(uow, account_id=account_id, amount="5.00", idempotency_key="pool-1")[
                "status"
            ]
            == "succeeded"
        )
    assert checked_out_during_charge == [0]


def test_auto_reload_holds_no_connection_during_the_psp_call(
    checked_out_during_charge: list[int],
) -> None:
    account_id = _account()
    with unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold="10", amount="20", now=now())
    with unit_of_work() as uow:
        assert batch.reload(uow, account_id)["status"] == "succeeded"
    assert checked_out_during_charge == [0]


# The janitor (payment sync): it claims a due charge and commits, asks the PSP holding no
# connection and no row lock, then applies the answer under a fresh lock.


def _open_charges(account_id: str, keys: list[str]) -> dict[str, str]:
    """Charges committed by a worker that then vanished (status `processing`, lease running)."""
    ids = {}
    for key in keys:
        with unit_of_work() as uow:
            charge, must_call = charges.begin(
                uow, account_id=account_id, amount="5.00", idempotency_key=key, now=now()
            )
            assert must_call
            ids[key] = charge.id
    return ids


def _after_the_lease() -> datetime:
    return now() + timedelta(seconds=get_settings().charge_lease_seconds + 60)


def _status(charge_id: str) -> str:
    with unit_of_work() as uow:
        row = uow.session.get(Charge, charge_id)
        assert row is not None
        return row.status


def test_janitor_holds_no_connection_and_no_lock_during_the_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account_id = _account()
    ids = _open_charges(account_id, ["jan-paid", "jan-lost", "jan-raced"])
    with unit_of_work() as uow:  # one of them had timed out at the PSP: `unknown`
        uow.session.execute(
            update(Charge).where(Charge.id == ids["jan-lost"]).values(status="unknown")
        )
    seen: dict[str, int] = {}
    answers = {
        "jan-paid": ChargeResult(Outcome.SUCCEEDED, "bt_paid"),
        "jan-lost": None,
        "jan-raced": ChargeResult(Outcome.SUCCEEDED, "bt_raced"),
    }

    def lookup(self: Any, key: str) -> ChargeResult | None:
        seen[key] = get_engine().pool.checkedout()  # type: ignore[attr-defined]
        with get_engine().connect() as other:  # nobody holds the charge row
            locked = other.execute(
                text("SELECT id FROM charges WHERE idempotency_key = :k FOR UPDATE NOWAIT"),
                {"k": key},
            ).scalar_one()
            assert locked == ids[key]
            other.rollback()
        if key == "jan-raced":  # the worker that ran the charge finishes it meanwhile
            with unit_of_work() as uow:
                charges.apply(uow, ids[key], ChargeResult(Outcome.SUCCEEDED, "bt_raced"), now())
        return answers[key]

    monkeypatch.setattr(type(get_adapter("braintree")), "lookup", lookup)
    as_of = _after_the_lease()
    with time_machine.travel(as_of), unit_of_work() as uow:  # the lease is over, really
        result = janitor.sync_pending(uow, as_of)
    # Resolved by the janitor: paid and lost; the raced one was resolved by its worker.
    assert result == {"checked": 3, "resolved": 2}
    assert seen == {"jan-paid": 0, "jan-lost": 0, "jan-raced": 0}
    assert [_status(ids[k]) for k in answers] == ["succeeded", "failed", "succeeded"]
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == Decimal("10.00")  # once each
        assert ledger.audit(uow.session)["ok"]


def test_two_janitors_at_once_look_each_charge_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    account_id = _account()
    keys = [f"pair-{i}" for i in range(6)]
    ids = _open_charges(account_id, keys)
    with unit_of_work() as uow:  # half timed out at the PSP (`unknown`), half vanished
        uow.session.execute(
            update(Charge)
            .where(Charge.id.in_([ids[k] for k in keys[::2]]))
            .values(status="unknown", next_attempt_at=now())
        )
    asked: list[str] = []
    guard = threading.Lock()
    both_inside = threading.Barrier(2)
    first_call = threading.local()

    def lookup(self: Any, key: str) -> ChargeResult | None:
        with guard:
            asked.append(key)
        if not getattr(first_call, "done", False):
            first_call.done = True
            both_inside.wait(timeout=10)  # both janitors are asking the PSP at the same time
        time.sleep(0.05)
        index = int(key.rsplit("-", 1)[1])
        return [ChargeResult(Outcome.SUCCEEDED, f"bt_{key}"), None, ChargeResult(Outcome.UNKNOWN)][
            index % 3
        ]

    monkeypatch.setattr(type(get_adapter("braintree")), "lookup", lookup)
    as_of = _after_the_lease()

    def run_janitor() -> dict[str, int]:
        with unit_of_work() as uow:
            return janitor.sync_pending(uow, as_of)

    with time_machine.travel(as_of):  # the lease is over, really
        results = at_once(run_janitor, 2)
    assert sorted(asked) == sorted(keys)  # each charge asked once, not once per janitor
    assert all(r["checked"] >= 1 for r in results)
    assert sum(r["checked"] for r in results) == 6
    assert sum(r["resolved"] for r in results) == 4  # 2 succeeded + 2 not received
    statuses = {k: _status(ids[k]) for k in keys}
    assert statuses == {
        "pair-0": "succeeded",
        "pair-1": "failed",
        "pair-2": "unknown",
        "pair-3": "succeeded",
        "pair-4": "failed",
        "pair-5": "processing",
    }
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == Decimal("10.00")
        rows = {c.idempotency_key: c for c in uow.session.scalars(select(Charge))}
    for key in ("pair-2", "pair-5"):  # still open: one look-up counted, backed off
        assert rows[key].sync_attempts == 1
        assert rows[key].next_attempt_at == as_of + charges.SYNC_SCHEDULE[0]
    with unit_of_work() as uow:  # nothing is due again at the same moment
        assert janitor.sync_pending(uow, as_of) == {"checked": 0, "resolved": 0}
    assert len(asked) == 6
