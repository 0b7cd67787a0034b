"""Configuration that could never run is refused when it is made (issue 11, item 3): through
`balancectl auto-reload set ... --json` (a real process) and through the service."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from config import reset_settings
from tests.cli.test_cli import check_refusal, ok_json, run
from worker.accounts import service as accounts
from worker.auto_reload import configure
from worker.db.session import unit_of_work
from worker.kernel.errors import NeverRuns, ValidationError
from worker.ledger.models import Account
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


def _account(currency: str = "EUR") -> str:
    with unit_of_work() as uow:
        account_id = str(accounts.create(uow, name="Config Co", currency=currency, now=T0)["id"])
    with unit_of_work() as uow:
        payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{account_id}",
            now=T0,
        )
    return account_id


def _nothing_written(account_id: str) -> None:
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        assert account.auto_reload_enabled is False
        assert account.auto_reload_threshold is None and account.auto_reload_amount is None
        enabled = uow.session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "auto_reload.enabled")
        )
        assert enabled == 0


def _set(account_id: str, threshold: str, amount: str, *extra: str) -> Any:
    return run(
        "auto-reload",
        "set",
        account_id,
        "--threshold",
        threshold,
        "--amount",
        amount,
        *extra,
        "--json",
    )


def _refused(result: subprocess.CompletedProcess[str], field: str, code: str = "never_runs") -> str:
    return str(check_refusal(result, field, code)["message"])


# --- through the CLI: exit 1, the error naming the field, nothing written ----------------------


def test_the_reported_amount_above_the_monthly_cap_is_refused() -> None:
    """`auto-reload set ID --threshold 10 --amount 99999` with the cap at 10000: every
    reload would have been skipped as capped_month, silently, down to zero."""
    account_id = _account()
    message = _refused(_set(account_id, "10", "99999"), "amount")
    assert "AUTO_RELOAD_MAX_AMOUNT_PER_MONTH (10000.00 EUR)" in message
    assert "capped_month" in message
    _nothing_written(account_id)


def test_a_threshold_whose_reload_from_zero_is_above_the_monthly_cap_is_refused() -> None:
    """Threshold 10000, step 5000: from zero the smallest n x 5000 above 10000 is
    3 x 5000 = 15000, above the cap (10000): a depleted account would never be reloaded."""
    account_id = _account()
    message = _refused(_set(account_id, "10000", "5000"), "threshold")
    assert "15000.00 EUR (3 x 5000.00)" in message
    assert "AUTO_RELOAD_MAX_AMOUNT_PER_MONTH (10000.00 EUR)" in message
    _nothing_written(account_id)
    # The largest that still runs: from zero, 2 x 5000 = 10000 lands above 9999.99.
    shown = ok_json("auto-reload", "set", account_id, "--threshold", "9999.99", "--amount", "5000")
    assert shown["auto_reload"]["threshold"] == "9999.99"


def test_a_threshold_of_zero_never_runs_and_is_refused() -> None:
    account_id = _account()
    message = _refused(_set(account_id, "0", "20"), "threshold")
    assert "never goes below zero" in message
    _nothing_written(account_id)


def test_more_decimals_than_the_currency_has_are_refused() -> None:
    account_id = _account()
    message = _refused(_set(account_id, "10.005", "20"), "threshold", "invalid")
    assert "EUR has 2 decimal place(s): 10.005 has more" in message
    _nothing_written(account_id)


@pytest.mark.parametrize(
    ("currency", "threshold", "amount", "field"),
    [
        ("EUR", "10.005", "20", "threshold"),
        ("EUR", "10", "20.001", "amount"),
        ("JPY", "1000.5", "2000", "threshold"),
        ("JPY", "1000", "2000.5", "amount"),
        ("KWD", "10.0005", "20", "threshold"),
    ],
)
def test_the_service_refuses_more_decimals_than_the_currency_has(
    currency: str, threshold: str, amount: str, field: str
) -> None:
    account_id = _account(currency)
    with pytest.raises(ValidationError) as info, unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold=threshold, amount=amount, now=T0)
    assert (info.value.field, info.value.code) == (field, "invalid")
    _nothing_written(account_id)


def test_a_method_the_psp_cannot_charge_on_demand_is_refused() -> None:
    account_id = _account()
    with unit_of_work() as uow:
        bank = payment_methods.add(uow, account_id=account_id, psp="bank_transfer", now=T0)
    message = _refused(_set(account_id, "10", "20", "--method", bank["id"]), "method", "invalid")
    assert "not available for bank transfer" in message
    _nothing_written(account_id)


def test_the_sandboxs_soft_failure_amount_is_data_and_accepted() -> None:
    """The report's 3000.50 (processor unavailable) is a fact of the PSP, not of the setting:
    accepted here, and the failure policy bounds what it costs (test_policy.py)."""
    account_id = _account()
    shown = ok_json("auto-reload", "set", account_id, "--threshold", "10", "--amount", "3000.50")
    assert shown["auto_reload"]["amount"] == "3000.50"


@pytest.mark.parametrize("amount", ["2001.00", "5001.00"])
def test_the_service_accepts_the_sandboxs_decline_amounts(amount: str) -> None:
    account_id = _account()
    with unit_of_work() as uow:
        shown = configure.configure(
            uow, account_id=account_id, threshold="10", amount=amount, now=T0
        )
    assert shown["auto_reload"]["amount"] == amount


def test_the_cap_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_RELOAD_MAX_AMOUNT_PER_MONTH", "100")
    reset_settings()
    account_id = _account()
    message = _refused(_set(account_id, "10", "100.01"), "amount")
    assert "(100.00 EUR)" in message
    message = _refused(_set(account_id, "100", "50"), "threshold")  # from zero: 3 x 50
    assert "150.00 EUR (3 x 50.00)" in message
    _nothing_written(account_id)
    shown = ok_json("auto-reload", "set", account_id, "--threshold", "99.99", "--amount", "50")
    assert shown["auto_reload"]["threshold"] == "99.99"  # from zero: 2 x 50 = 100, the cap


# --- through the service ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "amount", "field"),
    [
        ("10", "99999", "amount"),
        ("10", "10000.01", "amount"),
        ("10000", "5000", "threshold"),
        ("10000", "10000", "threshold"),  # from zero: 2 x 10000
        ("10000", "1", "threshold"),  # from zero: 10001 x 1
        ("0", "20", "threshold"),
        ("0.00", "20", "threshold"),
    ],
)
def test_the_service_refuses_what_could_never_run(threshold: str, amount: str, field: str) -> None:
    account_id = _account()
    with pytest.raises(NeverRuns) as info, unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold=threshold, amount=amount, now=T0)
    assert info.value.field == field
    assert info.value.code == "never_runs"
    assert isinstance(info.value, ValidationError)  # a kind of bad value for old callers
    _nothing_written(account_id)


@pytest.mark.parametrize(
    ("threshold", "amount"),
    [
        ("10", "10000"),  # one reload of the whole cap
        ("9999.99", "10000"),
        ("5000", "5000"),  # from zero: 2 x 5000 = 10000 > 5000
        ("0.01", "0.01"),  # from zero: 2 x 0.01
        ("9999.99", "1"),  # from zero: 10000 x 1, the cap exactly
    ],
)
def test_the_service_accepts_what_can_run_right_up_to_the_cap(threshold: str, amount: str) -> None:
    account_id = _account()
    with unit_of_work() as uow:
        shown = configure.configure(
            uow, account_id=account_id, threshold=threshold, amount=amount, now=T0
        )
    assert shown["auto_reload"]["enabled"] is True
    assert Decimal(shown["auto_reload"]["amount"]) == Decimal(amount)
