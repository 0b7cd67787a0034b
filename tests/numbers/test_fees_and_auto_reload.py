"""Fees and auto-reload together: a renewal that would fail is a reason to reload.

The sweep counts the fees due within the next sweep interval against the balance, and the
reload it plans is sized so the balance stays above the threshold once they are paid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from worker.accounts import service as accounts
from worker.auto_reload import batch, configure
from worker.auto_reload import sweep as sweeps
from worker.db.session import unit_of_work
from worker.ledger import adjustments
from worker.ledger.models import Account
from worker.numbers import collect as fees
from worker.numbers import service as numbers
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
DUE = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)  # the first renewal of a number rented at T0


def _reload_account(balance: str, msisdn: str | None, fee: str = "5") -> str:
    with unit_of_work() as uow:
        account_id: str = accounts.create(uow, name="Look-ahead Co", now=T0)["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{account_id}",
            now=T0,
        )
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount=balance, reason="seed", now=T0)
    if msisdn is not None:
        with unit_of_work() as uow:
            numbers.rent(
                uow, account_id=account_id, msisdn=msisdn, country="GB", monthly_fee=fee, now=T0
            )
    with unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold="10", amount="20", now=T0)
    return account_id


def _due(as_of: datetime) -> set[str]:
    with unit_of_work() as uow:
        return set(uow.session.scalars(sweeps.due_query(as_of)))


def _balance(account_id: str) -> Decimal:
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        return account.balance


def test_the_sweep_reloads_for_a_fee_due_before_the_next_sweep() -> None:
    # After the first month (5): 13 left, above the threshold of 10; 13 - 5 = 8 is not.
    short = _reload_account("18", "+447400123456")
    rich = _reload_account("30", "+447400123457")  # 25 - 5 = 20: stays above
    plain = _reload_account("13", None)  # no numbers: above the threshold
    interval = timedelta(minutes=6)  # AUTO_RELOAD_INTERVAL
    assert _due(DUE - interval - timedelta(seconds=1)) == set()  # the fee is further away
    assert _due(DUE - interval) == {short}
    assert _due(DUE + timedelta(hours=5)) == {short}  # unpaid and overdue: still counted

    with unit_of_work() as uow:
        reloaded: dict[str, Any] = batch.reload(uow, short, DUE - interval)
    # 13 - 5 = 8: one reload of 20 lands 33, 28 once the fee is paid, above 10.
    assert (reloaded["status"], reloaded["amount"]) == ("succeeded", "20.00")
    with unit_of_work() as uow:
        skipped = batch.reload(uow, rich, DUE - interval)
    assert skipped["reason"] == "above_threshold"
    with unit_of_work() as uow:
        result = fees.collect(uow, DUE)
    assert (result["paid"], result["failed"]) == (2, 0)
    assert (_balance(short), _balance(rich), _balance(plain)) == (28, 20, 13)
    assert _due(DUE) == set()  # paid: the next fee is a month away


def test_the_reload_covers_the_fees_and_the_threshold_gap() -> None:
    account_id = _reload_account("60", "+447400123456", fee="50")  # 10 left, fee 50
    with unit_of_work() as uow:
        reloaded = batch.reload(uow, account_id, DUE - timedelta(minutes=1))
    # 10 - 50 = -40: n x 20 > 50 -> n = 3 (60): 70, then 20 after the fee, above 10.
    assert reloaded["amount"] == "60.00"


def test_the_look_ahead_is_backed_by_its_partial_index() -> None:
    with unit_of_work() as uow:
        uow.session.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = sweeps.due_query(T0).compile(
            dialect=uow.session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(r[0] for r in uow.session.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_accounts_auto_reload_due" in plan, plan
    assert "ix_accounts_fee_lookahead" in plan, plan
