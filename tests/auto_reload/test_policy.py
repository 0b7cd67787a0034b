"""Auto-reload's failure policy for soft failures (the PSP did not process the charge):
through the sweep and the batch, the real clock moved with time-machine, as the beat would.

Longer than 400 lines on purpose: every rule of the streak (back-off, its doubling and cap,
one mail per streak, what ends it, what never counts) is driven by the same beat-tick
helpers, and reads best beside them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select

from config import reset_settings
from tests.auto_reload import support as s
from worker.accounts import service as accounts
from worker.auto_reload import batch, configure, policy
from worker.charges import engine as charges
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.db.session import unit_of_work
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods
from worker.psp.base import ChargeResult, Outcome
from worker.psp.errors import TransportError
from worker.psp.sandbox import RemoteSide

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SWEEP = s.SWEEP
SOFT = "3000.50"  # Braintree sandbox: processor unavailable, not_attempted, code 3000


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


def _account(amount: str = SOFT, balance: str = "0", locale: str = "en") -> str:
    with unit_of_work() as uow:
        account_id = accounts.create(
            uow, name="Flaky PSP Co", emails=["billing@example.com"], locale=locale, now=T0
        )["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{account_id}",
            now=T0,
        )
    if balance != "0":
        with unit_of_work() as uow:
            adjustments.adjust(uow, account_id=account_id, amount=balance, reason="seed", now=T0)
    with unit_of_work() as uow:  # its nudge of a due account is not dispatched: sweeps work
        configure.configure(uow, account_id=account_id, threshold="10", amount=amount, now=T0)
    return str(account_id)


def _sweeps(start: datetime, end: datetime) -> list[datetime]:
    """Sweep every AUTO_RELOAD_INTERVAL from `start` to `end` inclusive; the due moments."""
    due: list[datetime] = []
    at = start
    while at <= end:
        if s.sweep(at):
            due.append(at)
        at += SWEEP
    return due


def _exhaust_one(start: datetime) -> datetime:
    """Sweeps from `start` until one reload charge is used up by soft failures (the first
    sweep and AUTO_RELOAD_SOFT_RETRIES more, one interval apart); the moment it failed."""
    at = start
    for _ in range(4):  # AUTO_RELOAD_SOFT_RETRIES = 3: four PSP attempts, then failed
        assert s.sweep(at) == 1, at
        at += SWEEP
    return at - SWEEP


# --- the report, reproduced -------------------------------------------------------------------


def test_two_hours_of_sweeps_on_a_soft_failing_reload_amount_are_bounded(
    psp_calls: list[str],
) -> None:
    """Issue 11, item 2: before, 21 sweeps made 6 charges and 21 PSP attempts, for ever."""
    account_id = _account()
    due = _sweeps(T0, T0 + timedelta(hours=2))

    made = s.charges(account_id)
    # Charge 1: attempts at 0, 6, 12, 18 min, then failed: back-off 1 h. Charge 2: 78-96 min,
    # then back-off 2 h, past the end of the two hours.
    assert len(made) == 2
    assert [c.status for c in made] == ["failed", "failed"]
    assert [c.attempts for c in made] == [4, 4]
    assert len(psp_calls) == 8 == sum(c.attempts for c in made)
    assert [int((at - T0) / SWEEP) for at in due] == [0, 1, 2, 3, 13, 14, 15, 16]
    account = s.get(account_id)
    assert account.auto_reload_soft_failures == 2
    assert account.auto_reload_backoff_until == T0 + timedelta(minutes=96, hours=2)
    assert account.auto_reload_enabled is True  # soft failures never turn it off
    assert account.auto_reload_declines == 0
    assert s.events(account_id, "auto_reload.failing") == []  # 2 in a row: not yet
    # The first day: charges from 0, 78, 216, 474 and 972 min (back-offs 1, 2, 4, 8, 16 h
    # after each one's 18 minutes of retries); the sixth waits until 1950 min.
    _sweeps(T0 + timedelta(hours=2, minutes=6), T0 + timedelta(hours=24))
    made = s.charges(account_id)
    assert [int((c.created_at - T0).total_seconds()) // 60 for c in made] == [0, 78, 216, 474, 972]
    assert len(psp_calls) == 20
    assert s.get(account_id).auto_reload_backoff_until == T0 + timedelta(minutes=990 + 16 * 60)


def test_the_back_off_doubles_per_charge_in_a_row_up_to_a_day_and_one_mail_per_streak(
    psp_calls: list[str],
) -> None:
    account_id = _account(locale="ja")
    at = T0
    expected_hours = [1, 2, 4, 8, 16, 24, 24]
    for n, hours in enumerate(expected_hours, start=1):
        failed_at = _exhaust_one(at)
        account = s.get(account_id)
        assert account.auto_reload_soft_failures == n
        until = failed_at + timedelta(hours=hours)
        assert account.auto_reload_backoff_until == until
        # Backing off: due neither for the sweep nor for an on-debit reload, until it ends.
        assert s.sweep(until - timedelta(minutes=1)) == 0
        with unit_of_work() as uow:
            skipped = batch.reload(uow, account_id, until - timedelta(minutes=1))
        assert (skipped["status"], skipped["reason"]) == ("skipped", "backoff")
        failing = next(iter(s.events(account_id, "auto_reload.failing")), None)
        if n < 3:
            assert failing is None and s.mails(account_id, "auto_reload.failing") == []
        else:  # the third in a row tells the customer, once for the streak
            assert failing is not None
            assert len(s.events(account_id, "auto_reload.failing")) == 1
            assert failing.data["failures"] == 3
            assert failing.data["code"] == "3000"
            assert failing.data["amount"] == "3000.50"
            [mail] = s.mails(account_id, "auto_reload.failing")
            assert mail.recipients == ["billing@example.com"]
            assert "3 回連続で処理されませんでした" in mail.text_body  # the account's locale
            assert "€3,000.50" in mail.text_body
        at = until
    assert len(psp_calls) == 4 * len(expected_hours)
    account = s.get(account_id)
    assert account.auto_reload_enabled is True
    assert account.auto_reload_declines == 0
    assert s.events(account_id, "auto_reload.disabled") == []


def test_a_success_ends_the_streak_and_the_next_streak_is_told_again() -> None:
    account_id = _account()
    at = T0
    for _ in range(3):
        at = _exhaust_one(at) + timedelta(days=1)
    assert len(s.mails(account_id, "auto_reload.failing")) == 1
    failing_at = s.get(account_id).auto_reload_failing_at
    assert failing_at is not None

    # Any charge that succeeds ends the streak and the back-off: here a manual top-up.
    with time_machine.travel(at, tick=False), unit_of_work() as uow:
        result = top_ups.top_up(
            uow, account_id=account_id, amount="5.00", idempotency_key="manual", now_fn=lambda: at
        )
    assert result["status"] == "succeeded"
    account = s.get(account_id)
    assert (account.auto_reload_soft_failures, account.auto_reload_failing_at) == (0, None)
    assert account.auto_reload_backoff_until is None

    # Still below the threshold (5 < 10): due at the next sweep, and a new streak begins
    # with the shortest back-off again.
    failed_at = _exhaust_one(at + SWEEP)
    assert s.get(account_id).auto_reload_backoff_until == failed_at + timedelta(hours=1)
    assert len(s.mails(account_id, "auto_reload.failing")) == 1
    for _ in range(2):
        failed_at = _exhaust_one(s.get(account_id).auto_reload_backoff_until or at)
    assert s.get(account_id).auto_reload_soft_failures == 3
    mails = s.mails(account_id, "auto_reload.failing")
    assert len(mails) == 2  # one per streak
    assert len(s.events(account_id, "auto_reload.failing")) == 2


def test_soft_failures_never_count_toward_the_decline_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PSP-wide outage must not turn auto-reload off for every account: even with one
    decline enough to disable, soft failures leave every account on and backing off."""
    monkeypatch.setenv("AUTO_RELOAD_DISABLE_AFTER_DECLINES", "1")
    monkeypatch.setenv("AUTO_RELOAD_SOFT_RETRIES", "0")  # one attempt a charge
    reset_settings()
    ids = [_account() for _ in range(5)]
    at = T0
    for n in range(1, 4):
        assert s.sweep(at) == 5  # the outage: every account's reload fails softly
        for account_id in ids:
            account = s.get(account_id)
            assert account.auto_reload_enabled is True
            assert account.auto_reload_declines == 0
            assert account.auto_reload_soft_failures == n
        at = (s.get(ids[0]).auto_reload_backoff_until or at) + timedelta(seconds=1)
    with unit_of_work() as uow:
        disabled = uow.session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "auto_reload.disabled")
        )
        failing = uow.session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "auto_reload.failing")
        )
    assert (disabled, failing) == (0, 5)  # each account told once, none turned off
    assert all(len(s.mails(i, "auto_reload.failing")) == 1 for i in ids)


def test_a_decline_in_between_neither_ends_nor_extends_the_soft_streak() -> None:
    """Only a success ends a streak: declines and soft failures are counted apart.

    Threshold 2001, step 1000.25: from 0 the reload is 3 x 1000.25 = 3000.75 (the sandbox:
    soft failure); from 1000.50 it is 2 x 1000.25 = 2000.50 (declined, code 2000)."""
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="Mixed", emails=["m@example.com"], now=T0)["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow, account_id=account_id, psp="braintree", nonce="fake-valid-nonce:mixed", now=T0
        )
    with unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold="2001", amount="1000.25", now=T0)

    def move_balance(amount: str, at: datetime) -> None:
        with unit_of_work() as uow:  # an adjustment is no charge: it ends nothing
            adjustments.adjust(uow, account_id=account_id, amount=amount, reason="x", now=at)

    failed_at = _exhaust_one(T0)
    assert s.get(account_id).auto_reload_soft_failures == 1
    at = failed_at + timedelta(hours=1)
    move_balance("1000.50", at)
    assert s.sweep(at) == 1
    [*_, declined] = s.charges(account_id)
    assert (declined.amount, declined.status) == (Decimal("2000.50"), "declined")
    account = s.get(account_id)
    assert (account.auto_reload_declines, account.auto_reload_soft_failures) == (1, 1)
    assert account.auto_reload_backoff_until == at + timedelta(hours=1)  # AUTO_RELOAD_BACKOFF
    move_balance("-1000.50", at)
    failed_at = _exhaust_one(at + timedelta(hours=1))
    account = s.get(account_id)
    assert (account.auto_reload_declines, account.auto_reload_soft_failures) == (1, 2)
    assert account.auto_reload_backoff_until == failed_at + timedelta(hours=2)  # doubled


def test_a_new_setting_starts_afresh() -> None:
    """`auto-reload set` again (what the mail asks for) ends the streak and its back-off."""
    account_id = _account()
    at = _exhaust_one(T0)
    assert s.get(account_id).auto_reload_soft_failures == 1
    with unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold="10", amount="20", now=at)
    account = s.get(account_id)
    assert (account.auto_reload_soft_failures, account.auto_reload_backoff_until) == (0, None)
    assert s.sweep(at + SWEEP) == 1
    assert s.get(account_id).balance == Decimal("20.00")


def test_a_reload_used_up_after_auto_reload_was_turned_off_tells_nobody_it_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The customer turned auto-reload off while its charge was at the PSP: the answer is
    still recorded and counted, but no mail says "auto-reload tries again"."""
    monkeypatch.setenv("AUTO_RELOAD_FAILING_AFTER", "1")
    monkeypatch.setenv("AUTO_RELOAD_SOFT_RETRIES", "0")
    reset_settings()
    account_id = _account()
    with time_machine.travel(T0, tick=False), unit_of_work() as uow:
        charge, must_call = charges.begin(
            uow,
            account_id=account_id,
            amount=SOFT,
            idempotency_key=f"auto_reload:{account_id}:1",
            purpose="auto_reload",
            now=T0,
        )
        assert must_call
        charge_id = charge.id
    with unit_of_work() as uow:
        configure.turn_off(uow, account_id=account_id, now=T0)
    with time_machine.travel(T0, tick=False), unit_of_work() as uow:
        answer = ChargeResult(Outcome.NOT_ATTEMPTED, None, "3000", "Processor Unavailable")
        assert charges.apply(uow, charge_id, answer, T0).status == "failed"
    assert s.get(account_id).auto_reload_soft_failures == 1
    assert s.events(account_id, "auto_reload.failing") == []
    assert s.mails(account_id, "auto_reload.failing") == []


# --- the back-off's arithmetic and its settings ------------------------------------------------


@pytest.mark.parametrize(
    ("base", "cap", "expected"),
    [
        (None, None, [3600, 7200, 14400, 28800, 57600, 86400, 86400]),
        ("600", "1500", [600, 1200, 1500, 1500, 1500, 1500, 1500]),
        ("3600", "3600", [3600] * 7),
    ],
)
def test_soft_backoff_doubles_from_the_base_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, base: str | None, cap: str | None, expected: list[int]
) -> None:
    if base is not None and cap is not None:
        monkeypatch.setenv("AUTO_RELOAD_SOFT_BACKOFF", base)
        monkeypatch.setenv("AUTO_RELOAD_SOFT_BACKOFF_MAX", cap)
    reset_settings()
    got = [int(policy.soft_backoff(n).total_seconds()) for n in range(1, 8)]
    assert got == expected
    assert policy.soft_backoff(10_000) == timedelta(seconds=expected[-1])  # no overflow


def test_money_stays_where_it_was() -> None:
    """Nothing was charged, nothing credited: the balance and the ledger never moved."""
    account_id = _account(balance="2.50")
    _sweeps(T0, T0 + timedelta(hours=2))
    assert s.get(account_id).balance == Decimal("2.50")
    with unit_of_work() as uow:
        assert ledger.audit(uow.session)["ok"]


# --- the other way a reload ends `failed` uncharged: the PSP has no record of it --------------


def test_a_psp_that_never_records_the_charge_is_backed_off_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every call times out after sending and the PSP keeps no record: each charge is
    `unknown`, the janitor finds nothing after the lease and closes it `not_received`, and
    (before) the next sweep opened a new one, about every 12 minutes, for ever."""
    calls: list[str] = []

    def black_hole(self: RemoteSide, request: Any) -> Any:
        calls.append(request.idempotency_key)
        raise TransportError("read timed out", sent=True)

    monkeypatch.setattr(RemoteSide, "charge", black_hole)
    account_id = _account(amount="20")
    at = T0
    end = T0 + timedelta(hours=2)
    while at <= end:
        s.sweep(at)
        with time_machine.travel(at, tick=False), unit_of_work() as uow:
            janitor.sync_pending(uow, at)  # beat runs it every minute; each tick is enough
        at += SWEEP
    made = s.charges(account_id)
    assert [c.decline_code for c in made] == ["not_received"] * len(made)
    # Charge 1 at 0 min, closed at 6 (its lease over), back-off 1 h; charge 2 at 66, closed
    # at 72, back-off 2 h: past the end. Before: a charge every 12 minutes, 11 in two hours.
    assert [int((c.created_at - T0).total_seconds()) // 60 for c in made] == [0, 66]
    assert len(calls) == 2
    account = s.get(account_id)
    assert account.auto_reload_soft_failures == 2
    assert account.auto_reload_declines == 0 and account.auto_reload_enabled is True


def test_a_retry_superseded_by_a_new_balance_is_not_counted() -> None:
    """Closing a soft-failed reload because the balance moved before its retry is our
    decision, not the PSP's failure: the streak stays as it was.

    Threshold 2001, step 1000.25: from 0 the reload is 3000.75 (soft failure); from 1000.50
    it is 2000.50 (declined, code 2000), which replaces the open one."""
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="Moved", emails=["m@example.com"], now=T0)["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow, account_id=account_id, psp="braintree", nonce="fake-valid-nonce:moved", now=T0
        )
    with unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold="2001", amount="1000.25", now=T0)
    assert s.sweep(T0) == 1
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="1000.50", reason="x", now=T0)
    assert s.sweep(T0 + SWEEP) == 1
    first, second = s.charges(account_id)
    assert (first.status, first.decline_code) == ("failed", "superseded")
    assert (second.amount, second.status) == (Decimal("2000.50"), "declined")
    account = s.get(account_id)
    assert (account.auto_reload_soft_failures, account.auto_reload_declines) == (0, 1)


def test_closing_a_charge_without_the_close_hooks_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As `apply` refuses to record an outcome without its hooks: a forgotten wiring import
    must never skip the failure policy silently."""
    account_id = _account(amount="20")
    with unit_of_work() as uow:
        charge, _ = charges.begin(
            uow, account_id=account_id, amount="20", idempotency_key="k1", now=T0
        )
        charge_id = charge.id
    monkeypatch.setattr(charges, "_close_hooks", {})
    missing = pytest.raises(RuntimeError, match="close hooks not installed: auto_reload")
    with missing, unit_of_work() as uow:
        charges.fail(uow, charges.lock(uow.session, charge_id), "x", "y", T0)
    [charge] = s.charges(account_id)
    assert charge.status == "processing"  # nothing written
