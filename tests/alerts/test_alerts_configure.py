"""An alert threshold that could never warn is refused when it is set (issue 11, item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from config import reset_settings
from tests.cli.test_cli import check_refusal, ok_json, run
from worker.accounts import service as accounts
from worker.alerts import service as alerts
from worker.db.session import unit_of_work
from worker.kernel.errors import NeverRuns
from worker.ledger.models import Account
from worker.outbox.models import Event

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _floor_of_five(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An operator's DEPLETION_FLOOR of 5: at or below it the account is suspended."""
    monkeypatch.setenv("DEPLETION_FLOOR", "5")  # the CLI's process inherits it
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


def _account() -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name="Alert Co", emails=["ops@example.com"], now=T0)["id"])


def _nothing_written(account_id: str) -> None:
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        assert (account.alerts_enabled, account.alert_threshold) == (False, None)
        enabled = uow.session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "alerts.enabled")
        )
        assert enabled == 0


def test_a_threshold_at_the_depletion_floor_is_refused_through_the_cli() -> None:
    account_id = _account()
    result = run("alerts", "set", account_id, "--threshold", "5", "--json")
    error = check_refusal(result, "threshold", "never_runs")
    assert "DEPLETION_FLOOR (5.00 EUR)" in error["message"]
    assert "depletion notice" in error["message"]
    _nothing_written(account_id)
    shown = ok_json("alerts", "set", account_id, "--threshold", "5.0001")
    assert shown["alerts"]["threshold"] == "5.0001"  # balances are sub-cent: so is this


@pytest.mark.parametrize("threshold", ["5", "4.99", "0.01", "5.000000"])
def test_the_service_refuses_a_threshold_at_or_below_the_floor(threshold: str) -> None:
    account_id = _account()
    with pytest.raises(NeverRuns) as info, unit_of_work() as uow:
        alerts.configure(uow, account_id=account_id, threshold=threshold, now=T0)
    assert info.value.field == "threshold"
    _nothing_written(account_id)
