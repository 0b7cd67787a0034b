"""Auto-reload through its services, time controlled with as_of (no broker, no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from config import reset_settings
from worker.accounts import service as accounts
from worker.auto_reload import batch, configure, plan
from worker.auto_reload import sweep as sweeps
from worker.charges import engine as charges
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel import task_names
from worker.kernel.errors import NotFound, ValidationError
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.ledger.models import Account, LedgerTransaction
from worker.outbox.models import Event, Mail
from worker.payment_methods import service as payment_methods
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


def _account(balance: str = "0", emails: list[str] | None = None) -> tuple[str, str]:
    with unit_of_work() as uow:
        account_id = accounts.create(
            uow, name="Reload Co", emails=emails or ["ops@example.com"], now=T0
        )["id"]
    with unit_of_work() as uow:
        method = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{account_id}",
            now=T0,
        )
    if balance != "0":
        with unit_of_work() as uow:
            adjustments.adjust(uow, account_id=account_id, amount=balance, reason="seed", now=T0)
    return account_id, method["id"]


def _configure(account_id: str, threshold: str, amount: str, **kw: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return configure.configure(
            uow, account_id=account_id, threshold=threshold, amount=amount, now=T0, **kw
        )


def _sweep(as_of: datetime) -> tuple[dict[str, int], list[Any]]:
    sent: list[Any] = []
    with unit_of_work(dispatch=lambda n, a, k: sent.append((n, a, k))) as uow:
        result = sweeps.sweep(uow, as_of)
    return result, sent


def _reload(account_id: str, as_of: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        return batch.reload(uow, account_id, as_of)


def _get(account_id: str) -> Account:
    with unit_of_work() as uow:
        account = accounts.get(uow.session, account_id)
        uow.session.expunge(account)
        return account


def _count(model: Any, *where: Any) -> int:
    with unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _events(type_: str, account_id: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Event).where(Event.type == type_, Event.account_id == account_id)
            )
        )


# --- settings ---------------------------------------------------------------------------------


def test_configure_shows_in_the_account_and_bank_transfer_is_refused() -> None:
    account_id, method_id = _account()
    shown = _configure(account_id, "10", "20", method_id=method_id)
    assert shown["auto_reload"] == {
        "enabled": True,
        "threshold": "10.00",
        "amount": "20.00",
        "payment_method_id": method_id,
        "action_required_at": None,
    }
    with unit_of_work() as uow:
        bank = payment_methods.add(uow, account_id=account_id, psp="bank_transfer", now=T0)
    with pytest.raises(ValidationError) as info:
        _configure(account_id, "5", "50", method_id=bank["id"])
    assert info.value.field == "method"
    assert "auto-reload is not available for bank transfer" in str(info.value)
    assert _get(account_id).auto_reload_amount == Decimal("20")  # unchanged


@pytest.mark.parametrize(
    ("threshold", "amount", "field"),
    [
        ("-1", "20", "threshold"),
        ("abc", "20", "threshold"),
        ("10", "0", "amount"),
        ("10", "20.005", "amount"),
        ("10", "-5", "amount"),
        (10.0, "20", "threshold"),
    ],
)
def test_bad_settings_name_the_field_and_write_nothing(
    threshold: Any, amount: Any, field: str
) -> None:
    account_id, _ = _account()
    with pytest.raises(ValidationError) as info:
        _configure(account_id, threshold, amount)
    assert info.value.field == field
    assert _get(account_id).auto_reload_enabled is False
    assert _count(Event, Event.type == "auto_reload.enabled") == 0


def test_no_payment_method_is_a_clear_refusal() -> None:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="no card", now=T0)["id"]
    with pytest.raises(NotFound) as info:
        _configure(account_id, "10", "20")
    assert info.value.field == "method"


# --- the sweep ------------------------------------------------------------------------------


def test_sweep_selects_exactly_the_due_accounts() -> None:
    due_plain, _ = _account()
    _configure(due_plain, "10", "20")
    depleted, _ = _account("1")
    _configure(depleted, "10", "20")
    with unit_of_work() as uow:
        usage.debit(uow, account_id=depleted, amount="1", reference="drain", now=T0)
    assert _get(depleted).suspension_reason == "depleted"
    above, _ = _account("50")
    _configure(above, "10", "20")
    _disabled, _ = _account()  # below its (unset) threshold: auto-reload never configured
    admin, _ = _account()
    _configure(admin, "10", "20")
    in_backoff, _ = _account()
    _configure(in_backoff, "10", "20")
    capped, _ = _account()
    _configure(capped, "10", "20")
    in_flight, _ = _account()
    _configure(in_flight, "10", "20")
    with unit_of_work() as uow:
        uow.session.execute(
            update(Account)
            .where(Account.id == admin)
            .values(status="suspended", suspension_reason="admin")
        )
        uow.session.execute(
            update(Account)
            .where(Account.id == in_backoff)
            .values(auto_reload_backoff_until=T0 + timedelta(minutes=30))
        )
        uow.session.execute(
            update(Account)
            .where(Account.id == capped)
            .values(auto_reload_capped_until=T0 + timedelta(hours=5))
        )
    with unit_of_work() as uow:
        charges.begin(
            uow,
            account_id=in_flight,
            amount="20.00",
            idempotency_key="inflight",
            purpose="auto_reload",
            now=T0,
        )

    result, sent = _sweep(T0)
    assert result == {"due": 2, "queued": 2}
    [(name, (batch,), kwargs)] = sent  # both in one message
    assert name == "balance.auto_reload.reload_batch"
    assert sorted(batch) == sorted([due_plain, depleted])
    assert kwargs == {"as_of": T0.isoformat()}

    later, _ = _sweep(T0 + timedelta(hours=6))  # back-off and cap periods are over
    assert later["due"] == 4


def test_sweep_query_is_backed_by_the_partial_index() -> None:
    with unit_of_work() as uow:
        uow.session.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = sweeps.due_query(T0).compile(
            dialect=uow.session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(r[0] for r in uow.session.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_accounts_auto_reload_due" in plan, plan


# --- one reload: amount, exactly once --------------------------------------------------------


def test_reload_charges_n_times_the_amount_and_credits_once() -> None:
    account_id, _ = _account("1")
    _configure(account_id, "10", "4")
    result = _reload(account_id, T0)
    assert (result["status"], result["amount"]) == ("succeeded", "12.00")
    assert _get(account_id).auto_reload_enabled
    assert _get(account_id).balance == Decimal("13.00")
    again = _reload(account_id, T0 + timedelta(seconds=1))
    assert again == {
        "account_id": account_id,
        "status": "skipped",
        "reason": "above_threshold",
        "balance": "13.00",
    }
    assert _count(Charge) == 1


@pytest.mark.parametrize("during", ["debit", "depleting_debit", "top_up"])
def test_money_moving_during_the_psp_call_is_not_lost_from_the_balance(
    monkeypatch: pytest.MonkeyPatch, during: str
) -> None:
    """The reload commits, calls the PSP, then credits: a debit or top-up committed while the
    PSP answers must be in the balance the credit starts from (the row is re-read under lock)."""
    from worker.psp.registry import get_adapter

    account_id, _ = _account("5")
    _configure(account_id, "10", "20")
    adapter_class = type(get_adapter("braintree"))  # a new instance per call: patch the class
    real_charge = adapter_class.charge
    moved: list[str] = []

    def charge_while_money_moves(self: Any, request: Any) -> Any:
        result = real_charge(self, request)
        if moved:  # the top-up below calls the PSP too
            return result
        moved.append(request.idempotency_key)
        with unit_of_work() as uow:
            if during == "top_up":
                top_ups.top_up(
                    uow, account_id=account_id, amount="3.00", idempotency_key="meanwhile"
                )
            else:
                amount = "5" if during == "depleting_debit" else "1"
                usage.debit(uow, account_id=account_id, amount=amount, reference="m", now=T0)
        return result

    monkeypatch.setattr(adapter_class, "charge", charge_while_money_moves)
    result = _reload(account_id, T0)
    assert result["status"] == "succeeded"
    assert moved and moved[0].startswith("auto_reload:")
    expected = {"debit": "24.00", "depleting_debit": "20.00", "top_up": "28.00"}[during]
    account = _get(account_id)
    assert account.balance == Decimal(expected)
    assert account.status == "active"  # a depletion during the call is lifted by the credit
    with unit_of_work() as uow:
        assert ledger.audit(uow.session)["ok"]


def test_two_concurrent_reloads_make_one_charge() -> None:
    account_id, _ = _account()
    _configure(account_id, "10", "20")
    barrier = threading.Barrier(4)
    results: list[dict[str, Any]] = []

    def run() -> None:
        barrier.wait()
        results.append(_reload(account_id, T0))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r["status"] for r in results) == ["skipped"] * 3 + ["succeeded"]
    assert _count(Charge) == 1
    assert _get(account_id).balance == Decimal("20.00")


def test_database_allows_one_auto_reload_in_flight_per_account() -> None:
    account_id, method_id = _account()
    with unit_of_work() as uow:
        charges.begin(
            uow,
            account_id=account_id,
            amount="5.00",
            idempotency_key="a1",
            purpose="auto_reload",
            now=T0,
        )
    with pytest.raises(Exception, match="uq_charges_auto_reload_in_flight"), unit_of_work() as uow:
        charges.begin(
            uow,
            account_id=account_id,
            amount="5.00",
            idempotency_key="a2",
            purpose="auto_reload",
            now=T0,
        )
    with unit_of_work() as uow:  # a top-up is not an auto-reload: allowed alongside
        charges.begin(
            uow,
            account_id=account_id,
            amount="5.00",
            idempotency_key="t1",
            payment_method_id=method_id,
            now=T0,
        )
    assert _count(Charge) == 2


def test_the_debit_that_crosses_the_threshold_triggers_a_reload_at_once() -> None:
    account_id, _ = _account("12")
    _configure(account_id, "10", "20")

    def debit(amount: str, ref: str) -> list[Any]:
        sent: list[Any] = []
        with unit_of_work(dispatch=lambda n, a, k: sent.append((n, a))) as uow:
            usage.debit(uow, account_id=account_id, amount=amount, reference=ref, now=T0)
        return [s for s in sent if s[0].startswith("balance.auto_reload")]

    assert debit("1", "m1") == []  # 11 left: not below 10
    assert debit("1.5", "m2") == [("balance.auto_reload.reload_now", (account_id,))]  # crosses
    assert debit("1", "m3") == []  # already below: the sweep is the safety net


# --- failure policy ---------------------------------------------------------------------------


def test_decline_backoff_then_disable_after_three_with_event_and_mail() -> None:
    account_id, _ = _account(emails=["billing@example.com", "cto@example.com"])
    _configure(account_id, "10", "2001.00")  # Braintree: 2001 Insufficient Funds
    moment = T0
    for attempt in range(1, 4):
        result = _reload(account_id, moment)
        assert (result["status"], result["decline_code"]) == ("declined", "2001")
        account = _get(account_id)
        assert account.auto_reload_declines == attempt
        if attempt < 3:
            assert account.auto_reload_backoff_until == moment + timedelta(hours=1)
            assert _sweep(moment + timedelta(minutes=59))[0]["due"] == 0  # backing off
            skipped = _reload(account_id, moment + timedelta(minutes=59))
            assert skipped["reason"] == "backoff"
            moment += timedelta(hours=1)
            assert _sweep(moment)[0]["due"] == 1
    account = _get(account_id)
    assert account.auto_reload_enabled is False
    [disabled] = _events("auto_reload.disabled", account_id)
    assert disabled.data["reason"] == "declined"
    assert disabled.data["declines"] == 3
    with unit_of_work() as uow:
        [mail] = uow.session.scalars(select(Mail).where(Mail.account_id == account_id)).all()
    assert mail.kind == "auto_reload.disabled"
    assert sorted(mail.recipients) == ["billing@example.com", "cto@example.com"]
    assert "€2,001.00" in mail.text_body  # Babel, en: the amount that was declined
    assert _sweep(moment + timedelta(days=1))[0]["due"] == 0
    assert _count(LedgerTransaction) == 0


def test_a_successful_manual_top_up_ends_the_backoff() -> None:
    account_id, _ = _account()
    _configure(account_id, "10", "2001.00")
    _reload(account_id, T0)
    assert _get(account_id).auto_reload_backoff_until is not None
    with unit_of_work() as uow:
        top_ups.top_up(
            uow,
            account_id=account_id,
            amount="5.00",
            idempotency_key="manual",
            now_fn=lambda: T0 + timedelta(minutes=5),
        )
    account = _get(account_id)
    assert account.auto_reload_backoff_until is None
    assert account.auto_reload_declines == 0


def test_soft_failure_is_retried_with_capped_backoff_then_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTO_RELOAD_SOFT_RETRIES", "2")
    account_id, _ = _account()
    _configure(account_id, "10", "3000.00")  # processor unavailable: not_attempted
    first = _reload(account_id, T0)
    assert (first["status"], first["attempts"]) == ("not_attempted", 1)
    assert _sweep(T0 + timedelta(seconds=59))[0]["due"] == 0  # in flight until the retry time
    assert _sweep(T0 + timedelta(seconds=60))[0]["due"] == 1
    second = _reload(account_id, T0 + timedelta(seconds=60))
    assert second["charge_id"] == first["charge_id"]  # the same charge, the same key
    assert second["attempts"] == 2
    third = _reload(account_id, T0 + timedelta(seconds=180))  # 60 s, then 120 s
    assert third["status"] == "failed"
    assert _get(account_id).auto_reload_declines == 0  # a soft failure is not a decline
    assert _count(LedgerTransaction) == 0


def test_daily_cap_writes_one_capped_event_and_stops_until_tomorrow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTO_RELOAD_MAX_PER_DAY", "2")
    account_id, _ = _account()
    _configure(account_id, "10", "11")

    def spend(ref: str, at: datetime) -> None:
        with unit_of_work() as uow:
            usage.debit(uow, account_id=account_id, amount="11", reference=ref, now=at)

    assert _reload(account_id, T0)["status"] == "succeeded"
    spend("d1", T0)
    assert _reload(account_id, T0 + timedelta(hours=1))["status"] == "succeeded"
    spend("d2", T0 + timedelta(hours=1))
    capped = _reload(account_id, T0 + timedelta(hours=2))
    assert capped["reason"] == "capped_day"
    assert _sweep(T0 + timedelta(hours=3))[0]["due"] == 0
    assert len(_events("auto_reload.capped", account_id)) == 1
    tomorrow = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    assert _sweep(tomorrow)[0]["due"] == 1
    assert _reload(account_id, tomorrow)["status"] == "succeeded"


def test_monthly_amount_cap_charges_nothing_when_it_leaves_too_little(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTO_RELOAD_MAX_AMOUNT_PER_MONTH", "50")
    account_id, _ = _account()
    _configure(account_id, "10", "30")
    assert _reload(account_id, T0)["amount"] == "30.00"
    with unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount="30", reference="all", now=T0)
    capped = _reload(account_id, T0 + timedelta(hours=1))  # 30 + 30 > 50
    assert capped["reason"] == "capped_month"
    [event] = _events("auto_reload.capped", account_id)
    assert event.data["period"] == "month"
    assert event.data["until"] == "2026-12-01T00:00:00+00:00"
    assert _count(Charge) == 1


def test_three_reloads_within_ten_minutes_raise_a_burst_warning() -> None:
    account_id, _ = _account()
    _configure(account_id, "10", "11")
    for minute in (0, 3, 6):
        at = T0 + timedelta(minutes=minute)
        assert _reload(account_id, at)["status"] == "succeeded"
        with unit_of_work() as uow:
            usage.debit(uow, account_id=account_id, amount="11", reference=f"b{minute}", now=at)
    assert len(_events("auto_reload.burst", account_id)) == 1


def test_admin_suspension_stops_automatic_charging() -> None:
    account_id, _ = _account()
    _configure(account_id, "10", "20")
    with unit_of_work() as uow:
        uow.session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(status="suspended", suspension_reason="admin")
        )
    assert _reload(account_id, T0)["reason"] == "suspended_by_operator"
    assert _count(Charge) == 0


def test_sweep_sends_every_due_account_once_in_batches_of_the_configured_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTO_RELOAD_BATCH_SIZE", "3")
    reset_settings()
    due = _due_accounts(7)
    result, sent = _sweep(T0)
    assert result == {"due": 7, "queued": 7}
    batches = [a[0] for _, a, _ in sent]
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(i for b in batches for i in b) == sorted(due)
    assert {name for name, _, _ in sent} == {task_names.AUTO_RELOAD_RELOAD_BATCH}


def _due_accounts(n: int) -> list[str]:
    """n accounts at 0 with auto-reload on (threshold 10, amount 20): due."""
    ids = []
    for _ in range(n):
        account_id, _ = _account()
        _configure(account_id, threshold="10", amount="20")
        ids.append(account_id)
    return ids


def _batch(ids: Any, **kw: Any) -> tuple[dict[str, Any], list[Any]]:
    sent: list[Any] = []
    with unit_of_work(dispatch=lambda n, a, k: sent.append((n, a, k))) as uow:
        result = batch.reload_batch(uow, ids, T0, **{"budget_seconds": 60.0, **kw})
    return result, sent


def _batch_accounts() -> tuple[str, str, str, str]:
    first, _ = _account()
    broken, _ = _account()
    last, _ = _account()
    above, _ = _account(balance="50")
    for account_id in (first, broken, last, above):
        _configure(account_id, threshold="10", amount="20")
    return first, broken, last, above


def test_a_send_failure_for_one_account_of_a_batch_does_not_stop_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.psp.sandbox import RemoteSide

    first, broken, last, above = _batch_accounts()
    real = RemoteSide.charge

    def failing(self: RemoteSide, request: Any) -> Any:
        if broken in request.idempotency_key:
            raise RuntimeError("a bug in the adapter")  # (a timeout is data: `unknown`)
        return real(self, request)

    monkeypatch.setattr(RemoteSide, "charge", failing)
    result, _ = _batch([first, broken, last, above, "acc_missing"])
    assert result == {"accounts": 5, "succeeded": 2, "skipped": 1, "errors": 2, "handed_on": 0}
    assert _get(first).balance == Decimal("20.00") and _get(last).balance == Decimal("20.00")
    assert _get(broken).balance == Decimal("0")
    with unit_of_work() as uow:
        [charge] = uow.session.scalars(select(Charge).where(Charge.account_id == broken)).all()
        assert charge.status == "processing"  # committed before the call: the janitor's now
        assert ledger.audit(uow.session)["ok"]


def test_a_planning_failure_in_a_batch_falls_back_to_one_account_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, broken, last, above = _batch_accounts()
    real = plan.plan_account

    def failing(uow: Any, account: Account, *args: Any) -> Any:
        if account.id == broken:
            account.balance = Decimal("999")  # must be rolled back
            raise RuntimeError("a bug in one account's guards")
        return real(uow, account, *args)

    monkeypatch.setattr(plan, "plan_account", failing)
    result, _ = _batch([first, broken, last, above])
    assert result == {"accounts": 4, "succeeded": 2, "skipped": 1, "errors": 1, "handed_on": 0}
    assert _get(first).balance == Decimal("20.00") and _get(last).balance == Decimal("20.00")
    assert _get(broken).balance == Decimal("0")
    with unit_of_work() as uow:
        charged = uow.session.scalars(select(Charge.account_id)).all()
        assert sorted(charged) == sorted([first, last])  # each once, nothing for `broken`
        assert ledger.audit(uow.session)["ok"]


def test_a_batch_sizes_its_chunks_by_the_psps_pace_then_hands_the_rest_on_after_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _due_accounts(6)
    monkeypatch.setattr(batch, "PLAN_CHUNK", 3)
    monkeypatch.setattr(batch, "FIRST_CHUNK", 2)
    chunks: list[int] = []
    psp_seconds = iter([2.0, 16.0, 1.0])  # 1 s an account, then 16 s for 3 (5.3 s each)
    real = batch.reload_chunk

    def spy(uow: Any, chunk: list[str], as_of: Any, pace: Any, stops: Any = ()) -> Any:
        chunks.append(len(chunk))
        outcomes = real(uow, chunk, as_of, pace, stops)
        pace.psp_seconds += next(psp_seconds)  # as if the PSP had taken this long
        return outcomes

    monkeypatch.setattr(batch, "reload_chunk", spy)
    # Wall clock before each chunk: 0 s; 5 s (25 s left, 1 s an account: a full chunk of
    # 3); 22 s (8 s left at 5.3 s an account: one).
    ticks = iter([0.0, 0.0, 5.0, 22.0])
    result, sent = _batch(ids, budget_seconds=30.0, monotonic=lambda: next(ticks))
    assert chunks == [2, 3, 1]
    assert result["succeeded"] == 6 and result["handed_on"] == 0

    ids2 = _due_accounts(4)
    chunks.clear()
    psp_seconds = iter([20.0, 10.0])  # 10 s an account: one at a time, then over budget
    ticks = iter([0.0, 0.0, 21.0, 30.0])
    result, sent = _batch(ids2, budget_seconds=30.0, monotonic=lambda: next(ticks))
    assert chunks == [2, 1]
    assert result["succeeded"] == 3 and result["handed_on"] == 1
    hand_on = [(n, a, k) for n, a, k in sent if n == task_names.AUTO_RELOAD_RELOAD_BATCH]
    assert hand_on == [
        (task_names.AUTO_RELOAD_RELOAD_BATCH, (ids2[3:],), {"as_of": T0.isoformat()})
    ]
    assert [_get(i).balance for i in ids2] == [Decimal("20.00")] * 3 + [Decimal("0")]

    monkeypatch.setattr(batch, "reload_chunk", real)
    again, _ = _batch(ids2)  # the handed-on message, or a redelivery: each account once
    assert again["succeeded"] == 1 and again["skipped"] == 3
    with unit_of_work() as uow:
        count = uow.session.scalar(
            select(func.count()).select_from(Charge).where(Charge.account_id.in_(ids2))
        )
    assert count == 4


def test_a_lost_database_connection_stops_the_batch_and_the_janitor_settles_what_it_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time_machine
    from sqlalchemy.exc import OperationalError

    from worker.kernel import clock

    ids = _due_accounts(3)
    ids.sort()  # the order the batch plans and sends them in
    real = charges.apply

    def flaky(uow: Any, charge_id: str, result: Any, now: datetime) -> Any:
        if uow.session.get(Charge, charge_id).account_id == ids[1]:
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return real(uow, charge_id, result, now)

    monkeypatch.setattr(charges, "apply", flaky)
    with pytest.raises(OperationalError):  # the task retries the batch
        _batch(ids)
    monkeypatch.setattr(charges, "apply", real)
    assert [_get(i).balance for i in ids] == [Decimal("20.00"), Decimal("0"), Decimal("0")]

    # The retry: the first is above its threshold; the other two have a charge in flight
    # (the second was charged at the PSP, the third never sent): no second charge for any.
    retried, _ = _batch(ids)
    assert retried["skipped"] == 3

    # Past the lease the janitor looks both up: the PSP's success is credited, the charge
    # it never received is closed, and the next sweep reloads that account.
    later = clock.now() + timedelta(minutes=10)
    with time_machine.travel(later), unit_of_work() as uow:
        assert janitor.sync_pending(uow, later) == {"checked": 2, "resolved": 2}
    assert [_get(i).balance for i in ids] == [Decimal("20.00"), Decimal("20.00"), Decimal("0")]
    result, sent = _sweep(later)
    assert result["due"] == 1 and sent[0][1] == ([ids[2]],)
    assert _batch(ids[2:])[0]["succeeded"] == 1
    with unit_of_work() as uow:
        statuses = uow.session.execute(
            select(Charge.account_id, Charge.status).order_by(Charge.created_at)
        ).all()
        assert sorted(statuses) == sorted(
            [
                (ids[0], "succeeded"),
                (ids[1], "succeeded"),
                (ids[2], "failed"),
                (ids[2], "succeeded"),
            ]
        )
        assert ledger.audit(uow.session)["ok"]


@pytest.mark.parametrize("ids", ["acc_1", [1, 2], None])
def test_a_batch_of_something_else_than_account_ids_is_refused(ids: Any) -> None:
    with pytest.raises(ValidationError) as err:
        _batch(ids)
    assert err.value.field == "account_ids"


def test_a_batch_whose_new_key_is_taken_falls_back_and_fails_that_account_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, taken, last, _ = _batch_accounts()
    with unit_of_work() as uow:  # not through begin (it refuses reserved keys): a planted row
        row = charges.new_row(
            accounts.get(uow.session, taken),
            payment_methods.default_for(uow.session, taken),
            amount="5.00",
            idempotency_key=f"auto_reload:{taken}:1",
            purpose="top_up",
            now=T0,
        )
        charges.insert_if_absent(uow.session, [{**row, "status": "failed"}])
    with caplog.at_level("WARNING", logger="worker.auto_reload.batch"):
        result, _ = _batch([first, taken, last])
    assert result == {"accounts": 3, "succeeded": 2, "errors": 1, "handed_on": 0}
    # The conflict surfaced while planning the chunk together: nothing of the chunk was
    # written, and each account was then reloaded alone (only the taken one refused).
    messages = [r.getMessage() for r in caplog.records]
    assert any("together failed (IdempotencyConflict" in m for m in messages), messages
    assert any(f"auto-reload of {taken} refused" in m for m in messages), messages
    assert _get(taken).balance == Decimal("0")
    with unit_of_work() as uow:
        keys = uow.session.scalars(select(Charge.idempotency_key).where(Charge.account_id == taken))
        assert list(keys) == [f"auto_reload:{taken}:1"]  # nothing charged under it


def test_a_batch_task_slices_by_the_batch_seconds_within_half_the_soft_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.auto_reload.tasks import _batch_budget, _batch_slice

    assert (_batch_slice(), _batch_budget()) == (2, 120)  # AUTO_RELOAD_BATCH_SECONDS; 240 / 2
    monkeypatch.setenv("AUTO_RELOAD_BATCH_SECONDS", "500")
    reset_settings()
    assert (_batch_slice(), _batch_budget()) == (120, 120)
    # A broker that cannot say whether work waits: every batch hands on after one slice.
    monkeypatch.setenv("AUTO_RELOAD_BATCH_SECONDS", "2")
    monkeypatch.setenv("BROKER_URL", "sqla+sqlite:////tmp/never-opened.db")
    reset_settings()
    assert (_batch_slice(), _batch_budget()) == (2, 2)


def test_the_batch_task_sees_interactive_work_waiting_in_redis(broker_url: str) -> None:
    import redis

    from config import get_settings
    from worker.auto_reload.tasks import _interactive_waiting

    settings = get_settings()
    client = redis.Redis.from_url(broker_url)
    client.delete(settings.task_queue, settings.urgent_queue, settings.bulk_queue)
    client.lpush(settings.bulk_queue, b"a sweep's batch")
    assert _interactive_waiting() is False  # bulk work never counts
    for queue in (settings.urgent_queue, settings.task_queue):
        client.lpush(queue, b"waiting")
        assert _interactive_waiting() is True
        client.delete(queue)
    client.delete(settings.bulk_queue)


def test_a_batch_hands_on_at_the_first_chunk_boundary_when_interactive_work_waits() -> None:
    ids = _due_accounts(6)
    asked: list[int] = []

    def waiting() -> bool:
        asked.append(1)
        return True

    result, sent = _batch(ids, others_waiting=waiting)
    assert result["succeeded"] == batch.FIRST_CHUNK  # one chunk, then the thread is free
    assert result["handed_on"] == 6 - batch.FIRST_CHUNK
    assert len(asked) == 1  # asked once per chunk boundary, never before the first chunk
    hand_on = [a for n, a, _ in sent if n == task_names.AUTO_RELOAD_RELOAD_BATCH]
    assert hand_on == [(ids[batch.FIRST_CHUNK :],)]


def test_a_send_failure_leaves_no_connection_held_through_the_next_psp_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.db.session import get_engine
    from worker.psp.sandbox import RemoteSide

    first, broken, last, _ = _batch_accounts()
    ordered = sorted([first, broken, last])
    real = RemoteSide.charge
    checked_out: dict[str, int] = {}

    def watching(self: RemoteSide, request: Any) -> Any:
        account_id = next(a for a in ordered if a in request.idempotency_key)
        checked_out[account_id] = get_engine().pool.checkedout()  # type: ignore[attr-defined]
        if account_id == ordered[1]:
            raise RuntimeError("a bug in the adapter")
        return real(self, request)

    monkeypatch.setattr(RemoteSide, "charge", watching)
    result, _ = _batch(ordered)
    assert result["succeeded"] == 2 and result["errors"] == 1
    # The batch's own connection is back in the pool during every call, also after the
    # rollback that followed the failure (an expired object would have been reloaded).
    assert checked_out == {a: 0 for a in ordered}


def test_a_charge_that_waited_past_half_its_lease_is_renewed_and_one_past_it_is_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time_machine

    from worker.kernel import clock
    from worker.psp.sandbox import RemoteSide

    ids = sorted(_batch_accounts()[:3])
    lease = 360  # CHARGE_LEASE_SECONDS
    start = clock.now()
    real = RemoteSide.charge
    sent: list[str] = []

    def slow(self: RemoteSide, request: Any) -> Any:
        sent.append(request.idempotency_key)
        return real(self, request)

    monkeypatch.setattr(RemoteSide, "charge", slow)
    real_plan = plan.plan_chunk

    def plan_then_wait(uow: Any, account_ids: Any, as_of: Any) -> Any:
        planned = real_plan(uow, account_ids, as_of)
        # The chunk is committed; its sends now happen late on the real clock: the second
        # with a third of its lease left (renewed), the third after it ran out (not sent).
        moments = iter(
            [
                start + timedelta(seconds=10),
                start + timedelta(seconds=lease * 2 // 3),
                start + timedelta(seconds=lease + 5),
            ]
        )
        original_send = batch.send

        def send_at(uow: Any, step: Any, now_fn: Any, pace: Any = None) -> Any:
            with time_machine.travel(next(moments), tick=False):
                return original_send(uow, step, now_fn, pace)

        monkeypatch.setattr(batch, "send", send_at)
        return planned

    monkeypatch.setattr(plan, "plan_chunk", plan_then_wait)
    result, _ = _batch(ids)
    assert result["succeeded"] == 2 and result["errors"] == 1
    assert [k.split(":")[1] for k in sent] == ids[:2]  # the third never reached the PSP
    with unit_of_work() as uow:
        by_account = dict(uow.session.execute(select(Charge.account_id, Charge)).all())
        assert by_account[ids[1]].status == "succeeded"
        third = by_account[ids[2]]
        assert third.status == "processing"  # the janitor's: it finds no record, closes it
        assert third.lease_until is not None and third.lease_until <= start + timedelta(
            seconds=lease + 1
        )


def test_concurrent_batches_over_the_same_accounts_in_any_order_charge_each_once() -> None:
    from tests.concurrency import at_once

    ids = _due_accounts(12)
    batches = [ids, list(reversed(ids)), ids[3:] + ids[:3], ids + ids[:5]]  # and duplicates

    def run(ids_in_batch: list[str]) -> dict[str, Any]:
        with unit_of_work() as uow:
            return batch.reload_batch(uow, ids_in_batch, T0, budget_seconds=60.0)

    lock = threading.Lock()

    def next_batch() -> dict[str, Any]:
        with lock:
            batch = batches.pop()
        return run(batch)

    results = at_once(next_batch, 4)
    assert sum(r["succeeded"] for r in results) == 12
    assert all(r["errors"] == 0 for r in results)
    assert all(r["accounts"] == 12 for r in results)  # duplicates counted (and run) once
    with unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Charge)) == 12
        assert ledger.audit(uow.session)["ok"]
    assert {_get(i).balance for i in ids} == {Decimal("20.00")}


class _TimeIsUp(Exception):
    """Stands for Celery's SoftTimeLimitExceeded, which the task passes in as a stop."""


def test_an_exception_the_task_names_as_a_stop_ends_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.psp.sandbox import RemoteSide

    first, second, last, _ = _batch_accounts()
    real = RemoteSide.charge

    def time_is_up_at_the_second(self: RemoteSide, request: Any) -> Any:
        if second in request.idempotency_key:
            raise _TimeIsUp
        return real(self, request)

    monkeypatch.setattr(RemoteSide, "charge", time_is_up_at_the_second)
    # Not named as a stop: one account's failure, counted, and the batch goes on.
    result, _ = _batch([first, second, last])
    assert result["errors"] == 1 and result["succeeded"] == 2
    assert _get(last).balance == Decimal("20.00")

    first, second, last, _ = _batch_accounts()
    with pytest.raises(_TimeIsUp):  # named as a stop: raised, the rest is never sent
        _batch([first, second, last], stops=(_TimeIsUp,))
    assert _get(first).balance == Decimal("20.00")
    assert _get(last).balance == Decimal("0")
    with unit_of_work() as uow:  # the stopped account's charge waits for the janitor
        stopped = uow.session.scalars(select(Charge).where(Charge.account_id == second)).one()
        assert stopped.status == "processing"
