"""A bank-transfer refund waiting for details (`requires_details`) is bounded by the refunds
janitor (issue 14 review; project rule: every failure path ends, has a bound and someone
who is told): one reminder mail in the account's locale after REFUND_DETAILS_REMINDER_DAYS,
then after REFUND_DETAILS_EXPIRE_DAYS it fails (`details_not_received`), the money goes
back on the balance, an operator is flagged and warned. Against real PostgreSQL, time
controlled with time-machine."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from config import SettingsError, get_settings, reset_settings
from tests.invoices import support as s
from tests.refunds import support as r
from tests.refunds.test_bank_refunds import _details, _paid_bank_charge
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.refunds import janitor

pytestmark = pytest.mark.integration


def _sweep(moment: datetime) -> janitor.DetailsResult:
    with time_machine.travel(moment, tick=False), unit_of_work() as uow:
        return janitor.sweep_details(uow, moment)


def _waiting(amount: str = "40.00", locale: str = "en") -> tuple[str, str, str]:
    account_id, charge_id = _paid_bank_charge("100.00", locale=locale)
    waiting = r.refund(charge_id, amount)
    assert waiting["status"] == "requires_details"
    return account_id, charge_id, str(waiting["refund_id"])


def test_one_reminder_in_the_locale_then_it_fails_and_the_money_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    account_id, charge_id, refund_id = _waiting(locale="ja")
    start = now()
    assert _sweep(start + timedelta(days=6, hours=23)) == {"reminded": 0, "expired": 0}
    assert _sweep(start + timedelta(days=7, minutes=1)) == {"reminded": 1, "expired": 0}
    assert _sweep(start + timedelta(days=7, minutes=2)) == {"reminded": 0, "expired": 0}  # once
    assert _sweep(start + timedelta(days=20)) == {"reminded": 0, "expired": 0}
    [mail] = s.mails("refund.details_reminder")
    assert "返金" in mail.subject and refund_id in mail.text_body and "IBAN" in mail.text_body
    expires_on = (start + timedelta(days=30)).date().isoformat()
    assert expires_on in mail.text_body
    [reminder] = s.events("refund.details_reminder")
    assert reminder.data["refund_id"] == refund_id
    [row] = r.rows(charge_id)
    assert (row.status, row.needs_attention) == ("requires_details", False)
    assert s.get_account(account_id).balance == Decimal("60.00")  # still held

    with caplog.at_level(logging.WARNING, logger="worker.refunds.janitor"):
        assert _sweep(start + timedelta(days=30, minutes=1)) == {"reminded": 0, "expired": 1}
    assert _sweep(start + timedelta(days=31)) == {"reminded": 0, "expired": 0}
    [row] = r.rows(charge_id)
    assert (row.status, row.failure_code, row.needs_attention) == (
        "failed",
        "details_not_received",
        True,
    )
    assert s.get_account(account_id).balance == Decimal("100.00")
    [failed] = s.events("refund.failed")
    assert (failed.data["refund_id"], failed.data["code"]) == (refund_id, "details_not_received")
    assert failed.data["balance"] == "100.00"
    [flag] = s.events("refund.needs_attention")
    assert flag.data["reason"] == "details_not_received"
    assert any(
        rec.levelno == logging.WARNING and refund_id in rec.getMessage() for rec in caplog.records
    )
    assert len(s.mails("refund.details_reminder")) == 1
    assert s.system_balance("refunds_payable") == 0
    s.audit_ok()


def test_a_refund_never_reminded_still_expires_without_a_late_reminder() -> None:
    account_id, charge_id, _ = _waiting()
    assert _sweep(now() + timedelta(days=45)) == {"reminded": 0, "expired": 1}
    assert s.mails("refund.details_reminder") == []
    [row] = r.rows(charge_id)
    assert row.status == "failed" and s.get_account(account_id).balance == Decimal("100.00")
    s.audit_ok()


def test_details_given_after_the_reminder_stop_the_clock() -> None:
    account_id, charge_id, refund_id = _waiting()
    start = now()
    assert _sweep(start + timedelta(days=8))["reminded"] == 1
    assert _details(refund_id)["status"] == "succeeded"
    assert _sweep(start + timedelta(days=60)) == {"reminded": 0, "expired": 0}
    [row] = r.rows(charge_id)
    assert (row.status, row.needs_attention) == ("succeeded", False)
    assert s.events("refund.failed") == []
    assert s.get_account(account_id).balance == Decimal("60.00")
    s.audit_ok()


def test_concurrent_janitors_expire_each_refund_once() -> None:
    waiting = [_waiting(amount) for amount in ("10.00", "20.00", "30.00", "40.00")]
    moment = now() + timedelta(days=31)
    results: list[janitor.DetailsResult] = []
    barrier = threading.Barrier(3)

    def sweep() -> None:
        barrier.wait()
        with unit_of_work() as uow:
            results.append(janitor.sweep_details(uow, moment))

    with time_machine.travel(moment, tick=False):
        threads = [threading.Thread(target=sweep) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert sum(res["expired"] for res in results) == 4, results
    assert len(s.events("refund.failed")) == 4
    for account_id, charge_id, _ in waiting:
        [row] = r.rows(charge_id)
        assert row.status == "failed"
        assert s.get_account(account_id).balance == Decimal("100.00")
    s.audit_ok()


def test_the_task_runs_the_look_ups_and_the_details_sweep() -> None:
    _, charge_id, _ = _waiting()
    moment = now() + timedelta(days=8)
    with time_machine.travel(moment, tick=False), unit_of_work() as uow:
        assert janitor.run(uow, moment) == {
            "checked": 0,
            "resolved": 0,
            "reminded": 1,
            "expired": 0,
        }
    assert [row.status for row in r.rows(charge_id)] == ["requires_details"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    reset_settings()
    yield monkeypatch
    reset_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFUND_DETAILS_REMINDER_DAYS", "0"),
        ("REFUND_DETAILS_EXPIRE_DAYS", "366"),
        ("REFUND_DETAILS_REMINDER_DAYS", "seven"),
        ("REFUND_DETAILS_REMINDER_DAYS", "30"),  # not before the default expiry (30)
    ],
)
def test_bad_details_settings_are_refused_naming_the_setting(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env.setenv(name, value)
    reset_settings()
    with pytest.raises(SettingsError) as info:
        get_settings()
    assert str(info.value).startswith(f"{name}:"), info.value


def test_details_settings_are_read(env: pytest.MonkeyPatch) -> None:
    assert (
        get_settings().refund_details_reminder_days,
        get_settings().refund_details_expire_days,
    ) == (7, 30)
    env.setenv("REFUND_DETAILS_REMINDER_DAYS", "3")
    env.setenv("REFUND_DETAILS_EXPIRE_DAYS", "10")
    reset_settings()
    settings = get_settings()
    assert (settings.refund_details_reminder_days, settings.refund_details_expire_days) == (3, 10)


def test_refunds_waiting_for_details_are_bounded_even_when_the_look_ups_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`balance.refunds.sync` runs both halves: a look-up pass that raises (the database or
    a bug) still lets the expiry of refunds waiting for details happen, and still fails the
    task, so the error is seen."""
    _, charge_id, _ = _waiting()

    def broken(*args: object, **kwargs: object) -> janitor.SyncResult:
        raise ConnectionError("look-ups broke")

    monkeypatch.setattr(janitor, "sync_pending", broken)
    later = now() + timedelta(days=30, minutes=1)
    with (
        pytest.raises(ConnectionError, match="look-ups broke"),
        time_machine.travel(later, tick=False),
        unit_of_work() as uow,
    ):
        janitor.run(uow, later)
    [row] = r.rows(charge_id)
    assert (row.status, row.failure_code) == ("failed", "details_not_received")


def test_a_refund_whose_reminder_raises_does_not_block_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One refund whose reminder raises (first by age, so picked first every run) is rolled
    back, logged with its traceback and skipped for the rest of the run: the others are
    reminded in the same run, and it is tried again by the next one."""
    _, bad_charge, bad = _waiting()
    _, good_charge, _ = _waiting()
    _, other_charge, _ = _waiting()
    real = janitor.documents.details_reminder

    def reminder(uow: object, account: object, refund: Any, *args: object) -> None:
        if refund.id == bad:
            raise RuntimeError("the template broke")
        real(uow, account, refund, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(janitor.documents, "details_reminder", reminder)
    moment = now() + timedelta(days=8)
    with caplog.at_level(logging.ERROR, logger=janitor.log.name):
        assert _sweep(moment) == {"reminded": 2, "expired": 0}
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == f"could not remind or expire refund {bad} waiting for details"
    assert record.exc_info is not None
    assert len(s.mails("refund.details_reminder")) == 2
    assert [row.next_attempt_at for row in r.rows(bad_charge)] == [None]  # not marked
    assert all(row.next_attempt_at is not None for row in r.rows(good_charge))
    assert all(row.next_attempt_at is not None for row in r.rows(other_charge))
    assert _sweep(moment) == {"reminded": 0, "expired": 0}  # tried again, still failing
    monkeypatch.setattr(janitor.documents, "details_reminder", real)
    assert _sweep(moment) == {"reminded": 1, "expired": 0}


def test_a_stop_exception_ends_the_refunds_janitor_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task's soft time limit (a `stops` exception) out of the look-ups ends the run:
    the details sweep does not start."""

    class Stop(Exception):
        pass

    _, charge_id, _ = _waiting()

    def stopped(*args: object, **kwargs: object) -> janitor.SyncResult:
        assert kwargs["stops"] == (Stop,)
        raise Stop

    monkeypatch.setattr(janitor, "sync_pending", stopped)
    moment = now() + timedelta(days=8)
    with pytest.raises(Stop), time_machine.travel(moment, tick=False), unit_of_work() as uow:
        janitor.run(uow, moment, stops=(Stop,))
    assert [row.next_attempt_at for row in r.rows(charge_id)] == [None]  # not reminded


def test_the_refunds_janitor_task_stops_at_its_soft_time_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from worker.refunds import tasks

    seen: dict[str, object] = {}

    def run(uow: object, moment: datetime, **kwargs: object) -> janitor.JanitorResult:
        seen.update(kwargs)
        return {"checked": 0, "resolved": 0, "reminded": 0, "expired": 0}

    monkeypatch.setattr(janitor, "run", run)
    tasks.sync()
    assert seen == {"stops": (SoftTimeLimitExceeded,)}
