"""Edge cases of the charge engine and auto-reload found in review."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from sqlalchemy import select, update

from worker.accounts import service as accounts
from worker.auto_reload import batch, configure
from worker.charges import engine as charges
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel import clock
from worker.kernel.errors import IdempotencyConflict, ValidationError
from worker.ledger import adjustments
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods
from worker.psp.base import ChargeResult, Outcome

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

PAST = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _account(tag: str) -> tuple[str, str]:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="edge", emails=["e@example.com"], now=clock.now())[
            "id"
        ]
    with unit_of_work() as uow:
        method = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{tag}",
            now=clock.now(),
        )
    return account_id, method["id"]


def _charge(charge_id: str) -> Charge:
    with unit_of_work() as uow:
        row = uow.session.get(Charge, charge_id)
        assert row is not None
        uow.session.expunge(row)
        return row


def _events(type_: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(uow.session.scalars(select(Event).where(Event.type == type_)))


def test_a_replayed_job_still_gets_a_live_lease() -> None:
    account_id, _ = _account("lease")
    with unit_of_work() as uow:  # a reload replayed as of an old moment
        charge, _ = charges.begin(
            uow, account_id=account_id, amount="5.00", idempotency_key="lease-1", now=PAST
        )
        charge_id = charge.id
    row = _charge(charge_id)
    assert row.created_at == PAST
    assert row.lease_until is not None and row.lease_until > clock.now()
    with unit_of_work() as uow:  # the janitor, on the real clock, leaves it alone
        assert janitor.sync_pending(uow, clock.now())["checked"] == 0


def test_a_success_arriving_after_the_charge_was_closed_is_flagged() -> None:
    account_id, _ = _account("late")
    with unit_of_work() as uow:
        charge, _ = charges.begin(
            uow, account_id=account_id, amount="5.00", idempotency_key="late-1", now=clock.now()
        )
        charges.fail(uow, charges.lock(uow.session, charge.id), "not_received", "x", clock.now())
        charge_id = charge.id
    with unit_of_work() as uow:
        charges.apply(uow, charge_id, ChargeResult(Outcome.SUCCEEDED, "bt_late"), clock.now())
    row = _charge(charge_id)
    assert (row.status, row.needs_attention) == ("failed", True)
    [event] = _events("charge.needs_attention")
    assert event.data["psp_reference"] == "bt_late"
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == Decimal("0")


def test_a_weaker_late_answer_is_ignored_not_a_crash() -> None:
    account_id, _ = _account("weak")
    with unit_of_work() as uow:
        charge, _ = charges.begin(
            uow, account_id=account_id, amount="5.00", idempotency_key="weak-1", now=clock.now()
        )
        charge_id = charge.id
    with unit_of_work() as uow:
        charges.apply(uow, charge_id, ChargeResult(Outcome.PENDING, "bt_p"), clock.now())
    with unit_of_work() as uow:
        charges.apply(uow, charge_id, ChargeResult(Outcome.UNKNOWN), clock.now())
    assert _charge(charge_id).status == "pending"


def test_one_bad_charge_does_not_stop_the_janitor() -> None:
    account_id, _ = _account("janitor")
    ids = []
    for key in ("bad-1", "good-1"):
        with unit_of_work() as uow:
            charge, _ = charges.begin(
                uow, account_id=account_id, amount="5.00", idempotency_key=key, now=clock.now()
            )
            ids.append(charge.id)
    with unit_of_work() as uow:  # a PSP that is no longer enabled
        uow.session.execute(update(Charge).where(Charge.id == ids[0]).values(psp="retired"))
    later = clock.now() + timedelta(days=1)
    with time_machine.travel(later), unit_of_work() as uow:  # the lease is over, really
        result = janitor.sync_pending(uow, later)
    assert result == {"checked": 2, "resolved": 1}
    bad, good = _charge(ids[0]), _charge(ids[1])
    assert good.status == "failed"  # the PSP never received it: closed without a charge
    assert bad.status == "processing" and bad.sync_attempts == 1
    assert bad.next_attempt_at is not None and bad.next_attempt_at > later


def test_reserved_keys_and_purpose_are_part_of_idempotency() -> None:
    account_id, _ = _account("keys")
    with pytest.raises(ValidationError) as info, unit_of_work() as uow:
        top_ups.top_up(
            uow, account_id=account_id, amount="5.00", idempotency_key=f"auto_reload:{account_id}:1"
        )
    assert info.value.field == "idempotency_key"
    with unit_of_work() as uow:
        charges.begin(
            uow,
            account_id=account_id,
            amount="5.00",
            idempotency_key="shared",
            purpose="auto_reload",
            now=clock.now(),
        )
    with pytest.raises(IdempotencyConflict), unit_of_work() as uow:
        top_ups.top_up(uow, account_id=account_id, amount="5.00", idempotency_key="shared")


def test_a_soft_failed_reload_is_not_retried_on_a_replaced_card() -> None:
    account_id, first_card = _account("soft-a")
    with unit_of_work() as uow:
        configure.configure(
            uow, account_id=account_id, threshold="10", amount="3000.00", now=clock.now()
        )
    soft = _reload(account_id)
    assert soft["status"] == "not_attempted"
    with unit_of_work() as uow:
        second = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce="fake-valid-visa-nonce:soft-b",
            now=clock.now(),
        )
    with unit_of_work() as uow:
        configure.configure(
            uow,
            account_id=account_id,
            threshold="10",
            amount="20",
            method_id=second["id"],
            now=clock.now(),
        )
    fresh = _reload(account_id, clock.now() + timedelta(hours=1))
    assert fresh["status"] == "succeeded"
    assert fresh["payment_method_id"] == second["id"] != first_card
    assert fresh["amount"] == "20.00"
    old = _charge(soft["charge_id"])
    assert (old.status, old.decline_code) == ("failed", "superseded")


def _reload(account_id: str, at: datetime | None = None) -> dict[str, Any]:
    with unit_of_work() as uow:
        return batch.reload(uow, account_id, at)


def test_a_negative_adjustment_that_crosses_the_threshold_reloads_at_once() -> None:
    account_id, _ = _account("adjust")
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="12", reason="seed", now=clock.now())
    with unit_of_work() as uow:
        configure.configure(
            uow, account_id=account_id, threshold="10", amount="20", now=clock.now()
        )
    sent: list[Any] = []
    with unit_of_work(dispatch=lambda n, a, k: sent.append((n, a))) as uow:
        adjustments.adjust(
            uow, account_id=account_id, amount="-5", reason="correction", now=clock.now()
        )
    assert ("balance.auto_reload.reload_now", (account_id,)) in sent


def test_the_janitor_closes_an_abandoned_not_attempted_top_up() -> None:
    account_id, _ = _account("abandoned")
    with unit_of_work() as uow:
        soft = top_ups.top_up(
            uow, account_id=account_id, amount="3000.00", idempotency_key="abandoned-1"
        )
    assert soft["status"] == "not_attempted"
    with unit_of_work() as uow:
        assert janitor.sync_pending(uow, clock.now() + timedelta(minutes=29))["resolved"] == 0
    assert _charge(soft["charge_id"]).status == "not_attempted"
    with unit_of_work() as uow:
        assert janitor.sync_pending(uow, clock.now() + timedelta(minutes=31))["resolved"] == 1
    closed = _charge(soft["charge_id"])
    assert (closed.status, closed.decline_code) == ("failed", "3000")
    assert _events("charge.failed")


def test_vaulting_holds_no_lock_on_the_account(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import text

    from worker.psp.registry import get_adapter

    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="vault", now=clock.now())["id"]
    adapter_cls = type(get_adapter("braintree"))
    original = adapter_cls.vault
    locked: list[bool] = []

    def spy(self: Any, request: Any) -> Any:
        with unit_of_work() as other:  # another transaction can lock the account meanwhile
            other.session.execute(text("SET LOCAL lock_timeout = '1s'"))
            other.session.execute(
                text("SELECT 1 FROM accounts WHERE id = :a FOR UPDATE"), {"a": account_id}
            )
            locked.append(True)
        return original(self, request)

    monkeypatch.setattr(adapter_cls, "vault", spy)
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce="fake-valid-visa-nonce:vault",
            now=clock.now(),
        )
    assert locked == [True]


def test_an_abandoned_charge_that_cannot_be_closed_stops_neither_the_others_nor_the_look_ups(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    account_id, _ = _account("abandoned-many")
    soft = []
    for n in range(3):
        with unit_of_work() as uow:
            result = top_ups.top_up(
                uow, account_id=account_id, amount="3000.00", idempotency_key=f"abandon-{n}"
            )
        assert result["status"] == "not_attempted"
        soft.append(result["charge_id"])
    with unit_of_work() as uow:  # and a charge whose outcome is unknown, due a look-up
        charge, _ = charges.begin(
            uow, account_id=account_id, amount="5.00", idempotency_key="lost-1", now=clock.now()
        )
        lost = charge.id
    bad = soft[1]
    real_fail = charges.fail

    def fail(uow: Any, charge: Charge, *args: Any, **kwargs: Any) -> None:
        if charge.id == bad:
            raise RuntimeError("cannot close this one")
        real_fail(uow, charge, *args, **kwargs)

    monkeypatch.setattr(charges, "fail", fail)
    later = clock.now() + timedelta(days=1)
    with (
        caplog.at_level(logging.ERROR, logger=janitor.log.name),
        time_machine.travel(later),
        unit_of_work() as uow,
    ):
        result = janitor.sync_pending(uow, later)
    assert result == {"checked": 1, "resolved": 3}  # two closed, the lost one looked up
    assert [_charge(i).status for i in soft] == ["failed", "not_attempted", "failed"]
    assert (_charge(lost).status, _charge(lost).decline_code) == ("failed", "not_received")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == f"could not close abandoned charge {bad}"
    assert record.exc_info is not None  # with its traceback
    monkeypatch.setattr(charges, "fail", real_fail)  # mended: the next run closes it
    with time_machine.travel(later), unit_of_work() as uow:
        assert janitor.sync_pending(uow, later) == {"checked": 0, "resolved": 1}
    assert _charge(bad).status == "failed"


class _Stop(Exception):
    """Stands for Celery's SoftTimeLimitExceeded."""


def test_a_stop_exception_ends_the_janitors_run_a_row_failure_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account_id, _ = _account("stops")
    ids = []
    for n in range(3):
        with unit_of_work() as uow:
            charge, _ = charges.begin(
                uow, account_id=account_id, amount="5.00", idempotency_key=f"stop-{n}",
                now=clock.now(),
            )  # fmt: skip
            ids.append(charge.id)
    asked: list[str] = []
    real_sync_one = janitor.sync_one

    def sync_one(uow: Any, claim: janitor.Claim, now: datetime) -> bool:
        asked.append(claim.charge_id)
        if len(asked) == 1:
            raise RuntimeError("a broken row")  # isolated, the run goes on
        if len(asked) == 2:
            raise _Stop("time is up")  # ends the run
        return real_sync_one(uow, claim, now)

    monkeypatch.setattr(janitor, "sync_one", sync_one)
    later = clock.now() + timedelta(days=1)
    with pytest.raises(_Stop), time_machine.travel(later), unit_of_work() as uow:
        janitor.sync_pending(uow, later, stops=(_Stop,))
    assert len(asked) == 2
    first, second = _charge(asked[0]), _charge(asked[1])
    [untouched] = [_charge(i) for i in ids if i not in asked]
    assert (first.status, first.sync_attempts) == ("processing", 1)  # backed off by recover
    assert (second.status, second.sync_attempts) == ("processing", 1)  # its claim only
    assert (untouched.status, untouched.sync_attempts) == ("processing", 0)


def test_the_janitor_task_stops_at_its_soft_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from worker.charges import tasks

    seen: dict[str, Any] = {}

    def sync_pending(uow: Any, now: datetime, **kwargs: Any) -> janitor.SyncResult:
        seen.update(kwargs)
        return {"checked": 0, "resolved": 0}

    monkeypatch.setattr(janitor, "sync_pending", sync_pending)
    tasks.sync_pending()
    assert seen == {"stops": (SoftTimeLimitExceeded,)}
