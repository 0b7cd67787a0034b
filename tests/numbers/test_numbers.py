"""Virtual numbers and their monthly fees, through the services, on real PostgreSQL.

Time is passed in (`now` / `as_of`); the depletion timer is also checked under time-machine
(the collect job run "three days later" as the clock says).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from sqlalchemy import event, func, select

from config import reset_settings
from tests.concurrency import at_once
from worker.accounts import service as accounts
from worker.db.session import get_engine, unit_of_work
from worker.kernel import task_names
from worker.kernel.errors import InsufficientFunds, NotFound, NumberUnavailable, ValidationError
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.ledger.models import Account, LedgerTransaction
from worker.numbers import collect as fees
from worker.numbers import service as numbers
from worker.numbers.models import Number
from worker.outbox.models import Event, Mail
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)  # a 31st: renewals on 28 Feb, 31 Mar, ...
UK = "+447400123456"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings through the environment, as an operator sets them."""
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def _account(balance: str = "20", *, locale: str = "en") -> str:
    with unit_of_work() as uow:
        account_id: str = accounts.create(
            uow, name="Numbers Co", emails=["ops@example.com"], locale=locale, now=T0
        )["id"]
    if balance != "0":
        _credit(account_id, balance, T0)
    return account_id


def _credit(account_id: str, amount: str, at: datetime) -> list[tuple[str, tuple[Any, ...]]]:
    """An adjustment; returns the follow-ups it enqueued after commit."""
    sent: list[tuple[str, tuple[Any, ...]]] = []
    with unit_of_work(dispatch=lambda name, args, kwargs: sent.append((name, args))) as uow:
        adjustments.adjust(uow, account_id=account_id, amount=amount, reason="top up", now=at)
    return sent


def _debit(account_id: str, amount: str, ref: str, at: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        return usage.debit(uow, account_id=account_id, amount=amount, reference=ref, now=at)


def _rent(account_id: str, msisdn: str = UK, fee: str = "5", country: str = "GB") -> dict[str, Any]:
    with unit_of_work() as uow:
        return numbers.rent(
            uow, account_id=account_id, msisdn=msisdn, country=country, monthly_fee=fee, now=T0
        )


def _collect(as_of: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        return fees.collect(uow, as_of)


def _number(number_id: str) -> Number:
    with unit_of_work() as uow:
        number = uow.session.get(Number, number_id)
        assert number is not None
        return number


def _account_row(account_id: str) -> Account:
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        return account


def _fee_txns(account_id: str) -> list[LedgerTransaction]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(LedgerTransaction)
                .where(
                    LedgerTransaction.account_id == account_id,
                    LedgerTransaction.kind == numbers.KIND,
                )
                .order_by(LedgerTransaction.created_at)
            )
        )


def _events(type_: str, account_id: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Event)
                .where(Event.type == type_, Event.account_id == account_id)
                .order_by(Event.occurred_at, Event.id)
            )
        )


def _mails(kind: str, account_id: str) -> list[Mail]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Mail).where(Mail.kind == kind, Mail.account_id == account_id)
            )
        )


def _audit_ok() -> None:
    with unit_of_work() as uow:
        report = ledger.audit(uow.session)
    assert report["ok"], report


# --- renting ---------------------------------------------------------------------------------


def test_rent_normalises_to_e164_and_pays_the_first_month_from_the_balance() -> None:
    account_id = _account("20")
    got = _rent(account_id, msisdn="07400 123456", fee="4.50")
    assert {k: got[k] for k in ("account_id", "msisdn", "country", "status", "monthly_fee")} == {
        "account_id": account_id,
        "msisdn": UK,
        "country": "GB",
        "status": "active",
        "monthly_fee": "4.50",
    }
    assert got["next_renewal"] == "2026-02-28"  # one month after 31 January
    assert got["balance"] == "15.50"
    [txn] = _fee_txns(account_id)
    assert (txn.amount, txn.reference) == (Decimal("-4.50"), f"{got['id']}:0")
    assert _account_row(account_id).next_fee_at == datetime(2026, 2, 28, 10, tzinfo=UTC)
    [paid] = _events("fee.paid", account_id)
    assert paid.data["period"] == 0 and paid.data["amount"] == "4.50"
    with unit_of_work() as uow:
        listed = numbers.list_numbers(uow.session, account_id)
    assert [n["id"] for n in listed] == [got["id"]]
    _audit_ok()


@pytest.mark.parametrize(
    ("msisdn", "country", "fee", "field"),
    [
        ("12345", "GB", "5", "msisdn"),  # not a number of anything
        ("+14155550123", "GB", "5", "msisdn"),  # valid, but a US number
        ("+447400123456\n", "XX", "5", "country"),
        ("+447400123456", "GB", "5.1234567", "monthly_fee"),
        ("+447400123456", "GB", "0", "monthly_fee"),
        ("+4474\x00123456", "GB", "5", "msisdn"),
    ],
)
def test_rent_refuses_bad_input_naming_the_field_and_writes_nothing(
    msisdn: str, country: str, fee: str, field: str
) -> None:
    account_id = _account("20")
    with pytest.raises(ValidationError) as refused:
        _rent(account_id, msisdn=msisdn, fee=fee, country=country)
    assert refused.value.field == field
    assert _fee_txns(account_id) == []
    assert _account_row(account_id).balance == Decimal("20")


def test_rent_without_funds_is_refused_and_nothing_is_written() -> None:
    account_id = _account("4.99")
    with pytest.raises(InsufficientFunds) as refused:
        _rent(account_id, fee="5")
    assert refused.value.field == "monthly_fee"
    with unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Number)) == 0
    assert _fee_txns(account_id) == [] and _events("number.rented", account_id) == []
    assert _account_row(account_id).next_fee_at is None


def test_a_number_belongs_to_one_account_at_a_time() -> None:
    first, second = _account("20"), _account("20")
    rented = _rent(first)
    with pytest.raises(NumberUnavailable):
        _rent(second, msisdn="+44 7400 123456")
    with unit_of_work() as uow:
        cancelled = numbers.cancel(uow, number_id=rented["id"], now=T0)
    assert cancelled["status"] == "cancelled" and cancelled["next_renewal"] is None
    assert _account_row(first).next_fee_at is None
    assert _rent(second)["account_id"] == second  # free again once cancelled
    with pytest.raises(NotFound), unit_of_work() as uow:
        numbers.cancel(uow, number_id="num_nope", now=T0)


def test_two_accounts_renting_the_same_number_at_once_one_wins() -> None:
    ids = [_account("20") for _ in range(4)]
    queue = list(ids)

    def rent_one() -> str:
        account_id = queue.pop()
        try:
            _rent(account_id)
            return "rented"
        except NumberUnavailable:
            return "refused"

    assert sorted(at_once(rent_one, 4)) == ["refused", "refused", "refused", "rented"]
    with unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Number)) == 1
    _audit_ok()


# --- renewal ------------------------------------------------------------------------------------


def test_renewal_is_paid_once_per_period_however_often_the_job_runs() -> None:
    account_id = _account("20")
    number_id = _rent(account_id, fee="5")["id"]
    assert _collect(T0 + timedelta(days=28, seconds=-1))["due"] == 0  # due 28 Feb 10:00
    due = datetime(2026, 2, 28, 10, tzinfo=UTC)
    first = _collect(due + timedelta(minutes=5))
    assert (first["due"], first["paid"], first["failed"]) == (1, 1, 0)
    for as_of in (due + timedelta(minutes=5), due + timedelta(hours=3), due):  # replays
        assert _collect(as_of)["paid"] == 0
    assert [t.reference for t in _fee_txns(account_id)] == [f"{number_id}:0", f"{number_id}:1"]
    assert _number(number_id).next_renewal_at == datetime(2026, 3, 31, 10, tzinfo=UTC)
    # After downtime, one run catches up every period due (31 Mar, 30 Apr).
    late = _collect(datetime(2026, 5, 1, tzinfo=UTC))
    assert late["paid"] == 2
    assert _account_row(account_id).balance == Decimal("0")  # 20 - 4 x 5
    assert _account_row(account_id).next_fee_at == datetime(2026, 5, 31, 10, tzinfo=UTC)
    _audit_ok()


def test_two_concurrent_runs_pay_each_fee_once(env: pytest.MonkeyPatch) -> None:
    env.setenv("FEES_BATCH_SIZE", "3")  # many batches: the runs interleave
    reset_settings()
    ids = [_account("50") for _ in range(12)]
    for i, account_id in enumerate(ids):
        _rent(account_id, msisdn=f"+4474001231{i:02d}", fee="2")
        _rent(account_id, msisdn=f"+4474001232{i:02d}", fee="3")
    as_of = datetime(2026, 3, 1, tzinfo=UTC)
    results = at_once(lambda: _collect(as_of), 3)
    assert sum(r["paid"] for r in results) == 24
    assert sum(r.get("errors", 0) for r in results) == 0
    with unit_of_work() as uow:
        per_ref = uow.session.execute(
            select(LedgerTransaction.reference, func.count())
            .where(LedgerTransaction.kind == numbers.KIND)
            .group_by(LedgerTransaction.reference)
        ).all()
    assert len(per_ref) == 48 and {n for _, n in per_ref} == {1}
    assert {_account_row(a).balance for a in ids} == {Decimal("40")}
    _audit_ok()


# --- failure, credit, grace ------------------------------------------------------------------


def test_unpaid_fee_reported_once_retried_on_credit_then_paid() -> None:
    account_id = _account("7")
    number_id = _rent(account_id, fee="5")["id"]
    due = datetime(2026, 2, 28, 10, tzinfo=UTC)
    first = _collect(due + timedelta(minutes=1))
    assert (first["due"], first["paid"], first["failed"]) == (1, 0, 1)
    _collect(due + timedelta(hours=1))  # every run retries; no second report
    _collect(due + timedelta(hours=2))
    [failed] = _events("fee.payment_failed", account_id)
    assert failed.data["period"] == 1 and failed.data["code"] == "insufficient_funds"
    assert failed.data["cancel_at"] == "2026-03-03T10:00:00+00:00"  # NUMBER_GRACE_DAYS = 3
    [mail] = _mails("fee.payment_failed", account_id)
    assert UK in mail.text_body and "2026" in mail.text_body
    assert _number(number_id).status == "active"

    # Too little: the collection is enqueued, fails again, says nothing new.
    assert sorted(_credit(account_id, "1", due + timedelta(hours=3))) == [
        (task_names.EVENTS_RELAY, ()),
        (task_names.FEES_COLLECT_ACCOUNT, (account_id,)),
    ]
    with unit_of_work() as uow:
        assert fees.collect_account(uow, account_id, due + timedelta(hours=3))["failed"] == 1
    assert len(_events("fee.payment_failed", account_id)) == 1
    # Enough: the credit enqueues it and it pays.
    assert (task_names.FEES_COLLECT_ACCOUNT, (account_id,)) in _credit(
        account_id, "10", due + timedelta(hours=4)
    )
    with unit_of_work() as uow:
        assert fees.collect_account(uow, account_id, due + timedelta(hours=4))["paid"] == 1
    assert _account_row(account_id).balance == Decimal("8")  # 7 - 5 + 1 + 10 - 5
    # Nothing due any more: a credit enqueues nothing.
    assert _credit(account_id, "1", due + timedelta(hours=5)) == [(task_names.EVENTS_RELAY, ())]
    _audit_ok()


def test_fee_unpaid_past_the_grace_days_cancels_the_number(env: pytest.MonkeyPatch) -> None:
    env.setenv("NUMBER_GRACE_DAYS", "2")
    reset_settings()
    account_id = _account("6", locale="ja")  # 1 left after the first month: not depleted
    number_id = _rent(account_id, fee="5")["id"]
    due = datetime(2026, 2, 28, 10, tzinfo=UTC)
    assert _collect(due + timedelta(days=2) - timedelta(seconds=1))["cancelled"] == 0
    gone = _collect(due + timedelta(days=2))
    assert (gone["cancelled"], gone["paid"]) == (1, 0)
    number = _number(number_id)
    assert (number.status, number.cancel_reason) == ("cancelled", "unpaid")
    [cancelled] = _events("number.cancelled", account_id)
    assert cancelled.data["reason"] == "unpaid"
    [mail] = _mails("number.cancelled", account_id)
    assert "キャンセル" in mail.subject and UK in mail.text_body
    assert _account_row(account_id).next_fee_at is None
    assert _collect(due + timedelta(days=40))["due"] == 0  # a cancelled number is never due
    assert len(_fee_txns(account_id)) == 1


# --- depletion --------------------------------------------------------------------------------


def test_depletion_suspends_numbers_and_a_credit_in_time_restores_them() -> None:
    account_id = _account("10")
    number_id = _rent(account_id, fee="5")["id"]
    at = T0 + timedelta(days=1)
    assert _debit(account_id, "5", "m-1", at)["status"] == "suspended"
    assert _number(number_id).status == "suspended"
    [suspended] = _events("number.suspended", account_id)
    assert suspended.data["cancel_at"] == "2026-02-04T10:00:00+00:00"  # + 259200 s
    [mail] = _mails("account.depleted", account_id)
    assert "will be cancelled at" in mail.text_body and "February 4, 2026" in mail.text_body
    _credit(account_id, "3", at + timedelta(days=2))  # in time
    assert _number(number_id).status == "active"
    assert len(_events("number.restored", account_id)) == 1
    assert _collect(at + timedelta(days=4))["cancelled"] == 0
    assert _number(number_id).status == "active"


def test_an_account_that_stays_depleted_loses_its_numbers_after_the_delay() -> None:
    account_id = _account("10")
    kept = _rent(account_id, fee="2", msisdn="+447400123457")["id"]
    lost = _rent(account_id, fee="3", msisdn="+447400123458")["id"]
    start = T0 + timedelta(days=1)
    with time_machine.travel(start, tick=False):
        _debit(account_id, "5", "m-1", start)
    with time_machine.travel(start + timedelta(seconds=259199), tick=False):
        assert _collect(datetime.now(UTC))["cancelled"] == 0
    with time_machine.travel(start + timedelta(seconds=259200), tick=False):
        result = _collect(datetime.now(UTC))
    assert (result["due"], result["cancelled"]) == (2, 2)
    for number_id in (kept, lost):
        number = _number(number_id)
        assert (number.status, number.cancel_reason) == ("cancelled", "depleted")
    [mail] = _mails("number.cancelled", account_id)
    assert "balance stayed depleted" in mail.text_body
    # A credit afterwards restores nothing: they are gone.
    _credit(account_id, "20", start + timedelta(days=4))
    assert {_number(n).status for n in (kept, lost)} == {"cancelled"}
    _audit_ok()


def test_cancel_after_depletion_zero_cancels_at_once(env: pytest.MonkeyPatch) -> None:
    env.setenv("NUMBER_CANCEL_AFTER_DEPLETION", "0")  # the seed: at zero, numbers cancelled
    reset_settings()
    account_id = _account("10", locale="zh")
    number_id = _rent(account_id, fee="5")["id"]
    _debit(account_id, "5", "m-1", T0 + timedelta(hours=1))
    number = _number(number_id)
    assert (number.status, number.cancel_reason) == ("cancelled", "depleted")
    assert len(_events("number.suspended", account_id)) == 1
    assert len(_events("number.cancelled", account_id)) == 1
    [mail] = _mails("account.depleted", account_id)
    assert "已被取消" in mail.text_body
    assert _mails("number.cancelled", account_id) == []  # the depletion mail said it
    assert _account_row(account_id).next_fee_at is None


def test_a_fee_that_empties_the_balance_depletes_and_suspends() -> None:
    account_id = _account("10")
    number_id = _rent(account_id, fee="5")["id"]
    result = _collect(datetime(2026, 3, 1, tzinfo=UTC))
    assert result["paid"] == 1
    account = _account_row(account_id)
    assert (account.balance, account.status) == (Decimal("0"), "suspended")
    assert _number(number_id).status == "suspended"


def test_settings_are_validated(env: pytest.MonkeyPatch) -> None:
    from config import SettingsError, get_settings

    for name, value in (("NUMBER_GRACE_DAYS", "-1"), ("NUMBER_CANCEL_AFTER_DEPLETION", "x")):
        env.setenv(name, value)
        reset_settings()
        with pytest.raises(SettingsError, match=name):
            get_settings()
        env.delenv(name)
    reset_settings()


def test_accounts_without_numbers_pay_nothing_on_the_debit_and_credit_path() -> None:
    account_id = _account("10")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        _debit(account_id, "10", "m-1", T0)  # depletes: the depletion hook runs
        _credit(account_id, "5", T0)  # re-activates: the credit hook runs
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements and not [s for s in statements if "numbers" in s]


def test_a_run_past_its_time_budget_hands_the_rest_on(env: pytest.MonkeyPatch) -> None:
    env.setenv("FEES_BATCH_SIZE", "2")
    reset_settings()
    ids = [_account("20") for _ in range(5)]
    for i, account_id in enumerate(ids):
        _rent(account_id, msisdn=f"+4474001231{i:02d}", fee="2")
    as_of = datetime(2026, 3, 1, tzinfo=UTC)
    ticks = iter([0.0, 0.0, 5.0, 11.0])  # start, batch 1, batch 2, batch 3: over budget
    sent: list[tuple[str, dict[str, Any]]] = []
    with unit_of_work(dispatch=lambda name, args, kwargs: sent.append((name, kwargs))) as uow:
        first = fees.collect(uow, as_of, budget_seconds=10, monotonic=lambda: next(ticks))
    assert (first["paid"], first["handed_on"]) == (4, True)
    assert (task_names.FEES_COLLECT, {"as_of": as_of.isoformat()}) in sent
    rest = _collect(as_of)  # what the handed-on message runs
    assert (rest["accounts"], rest["paid"], rest["handed_on"]) == (1, 1, False)


@pytest.mark.parametrize(
    ("locale", "failed_subject", "cancelled_subject"),
    [
        ("en", "Payment failed", "Virtual numbers cancelled"),
        ("ja", "お支払い失敗", "キャンセルしました"),
        ("zh", "付款失败", "已取消"),
    ],
)
def test_failure_and_cancellation_mails_reach_the_smtp_server_in_the_locale(
    env: pytest.MonkeyPatch, locale: str, failed_subject: str, cancelled_subject: str
) -> None:
    from config import get_settings
    from tests.smtp_server import HOST, Recorder, running
    from worker.outbox import mail

    server = Recorder()
    with running(server) as port:
        for name, value in (("SMTP_HOST", HOST), ("SMTP_PORT", str(port))):
            env.setenv(name, value)
        env.setenv("SMTP_TIMEOUT_SECONDS", "5")
        reset_settings()
        account_id = _account("6", locale=locale)
        _rent(account_id, fee="5")
        due = datetime(2026, 2, 28, 10, tzinfo=UTC)
        _collect(due)  # fails: 1 left
        _collect(due + timedelta(days=3))  # past the grace days: cancelled
        settings = get_settings()
        with unit_of_work() as uow:
            sent = mail.send_pending(
                uow, mail.transport_for(settings), settings, due + timedelta(days=4)
            )
        assert sent["sent"] == 2
    subjects = sorted(str(r.message["Subject"]) for r in server.received)
    assert any(failed_subject in s for s in subjects), subjects
    assert any(cancelled_subject in s for s in subjects), subjects
    for received in server.received:
        assert received.rcpt_tos == ["ops@example.com"]
        body = received.message.get_body(preferencelist=("plain",))
        assert body is not None and UK in body.get_content()


def test_a_batched_debit_that_depletes_suspends_numbers_as_a_single_one_does() -> None:
    """debit_many (issue 16) runs the same depletion rule, hooks and mail as `debit`."""
    from worker.usage import batch

    account_id = _account("10")
    number_id = _rent(account_id, fee="5")["id"]
    at = T0 + timedelta(days=1)
    with unit_of_work() as uow:
        result = batch.debit_many(
            uow,
            debits=[
                {"account_id": account_id, "amount": "2", "reference": "m-1"},
                {"account_id": account_id, "amount": "3", "reference": "m-2"},  # depletes
                {"account_id": account_id, "amount": "1", "reference": "m-3"},  # refused
            ],
            now=at,
        )
    assert [r["status"] for r in result["results"]] == ["ok", "ok", "refused"]
    assert _account_row(account_id).status == "suspended"
    assert _number(number_id).status == "suspended"
    [suspended] = _events("number.suspended", account_id)
    assert suspended.data["cancel_at"] == "2026-02-04T10:00:00+00:00"
    [mail] = _mails("account.depleted", account_id)
    assert "will be cancelled at" in mail.text_body
