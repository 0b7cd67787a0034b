"""While the PSP is called, the worker holds no database connection (a 300 ms PSP would
otherwise pin a pooled connection idle-in-transaction for every charge in flight)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.clock import now
from worker.db.session import get_engine, unit_of_work
from worker.psp.base import ChargeResult
from worker.psp.registry import get_adapter
from worker.services import accounts, auto_reload, charges, payment_methods


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
            charges.top_up(uow, account_id=account_id, amount="5.00", idempotency_key="pool-1")[
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
        auto_reload.configure(uow, account_id=account_id, threshold="10", amount="20", now=now())
    with unit_of_work() as uow:
        assert auto_reload.reload(uow, account_id)["status"] == "succeeded"
    assert checked_out_during_charge == [0]
