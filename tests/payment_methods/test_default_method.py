"""The default payment method is only ever one we can charge on demand (issue 11, item 4).

A bank transfer never becomes the default by itself (first method added, the default
removed) nor on request; a top-up without a method then refuses naming
`payment_method_id` instead of quietly opening a pending bank-transfer charge.
Services against real PostgreSQL, and `balancectl methods set-default/remove/top-up` as a
real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from worker.accounts import service as accounts
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import NotFound, ValidationError
from worker.ledger.models import Account
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods
from worker.payment_methods.models import PaymentMethod

pytestmark = pytest.mark.integration  # real PostgreSQL, tables emptied first

CARD = "fake-valid-visa-nonce"
PAYPAL = "fake-paypal-billing-agreement-nonce"


def _account() -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name="Defaults", now=now())["id"])


def _add(account_id: str, psp: str, nonce: str | None = None, **kw: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return payment_methods.add(
            uow, account_id=account_id, psp=psp, nonce=nonce, now=now(), **kw
        )


def _card(account_id: str, tag: str = "") -> dict[str, Any]:
    return _add(account_id, "braintree", f"{CARD}:{account_id}{tag}")


def _bank(account_id: str) -> dict[str, Any]:
    return _add(account_id, "bank_transfer")


def _remove(account_id: str, method_id: str) -> dict[str, Any]:
    with unit_of_work() as uow:
        return payment_methods.remove(uow, account_id=account_id, method_id=method_id, now=now())


def _set_default(account_id: str, method_id: str) -> dict[str, Any]:
    with unit_of_work() as uow:
        return payment_methods.set_default(
            uow, account_id=account_id, method_id=method_id, now=now()
        )


def _defaults(account_id: str) -> list[str]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(PaymentMethod.id).where(
                    PaymentMethod.account_id == account_id,
                    PaymentMethod.is_default.is_(True),
                    PaymentMethod.removed_at.is_(None),
                )
            )
        )


def _count(model: Any, *where: Any) -> int:
    with unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _events(type_: str, account_id: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Event)
                .where(Event.type == type_, Event.account_id == account_id)
                .order_by(Event.occurred_at, Event.id)
            )
        )


def _top_up(account_id: str, key: str, **kw: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return top_ups.top_up(uow, account_id=account_id, amount="5", idempotency_key=key, **kw)


# --- never by itself ---------------------------------------------------------------------------


def test_removing_the_default_card_never_promotes_a_bank_transfer() -> None:
    """The reported fault: the next top-up quietly made a pending bank-transfer charge."""
    a = _account()
    card = _card(a)
    bank = _bank(a)
    assert _defaults(a) == [card["id"]]
    removed = _remove(a, card["id"])
    assert removed["default_payment_method_id"] is None
    assert _defaults(a) == []
    with pytest.raises(NotFound) as info:
        _top_up(a, "after-removal")
    assert info.value.field == "payment_method_id"
    assert "set-default" in str(info.value)
    assert _count(Charge) == 0
    # Named explicitly, a bank transfer is still a way to pay.
    assert _top_up(a, "named", payment_method_id=bank["id"])["status"] == "pending"


def test_removing_the_default_promotes_the_newest_card_or_paypal_over_a_newer_bank() -> None:
    a = _account()
    first = _card(a, ":1")
    paypal = _add(a, "paypal", f"{PAYPAL}:{a}")
    bank = _bank(a)  # the newest method of all
    removed = _remove(a, first["id"])
    assert removed["default_payment_method_id"] == paypal["id"]
    assert _defaults(a) == [paypal["id"]]
    [changed] = _events("payment_method.default_changed", a)
    assert changed.data == {
        "payment_method_id": paypal["id"],
        "previous_payment_method_id": first["id"],
        "reason": "default_removed",
    }
    assert _top_up(a, "promoted")["payment_method_id"] == paypal["id"]
    assert bank["default"] is False


def test_a_first_method_that_is_a_bank_transfer_is_not_the_default() -> None:
    a = _account()
    bank = _bank(a)
    assert bank["default"] is False
    assert _defaults(a) == []
    with pytest.raises(NotFound) as info:
        _top_up(a, "bank-only")
    assert info.value.field == "payment_method_id"
    assert _count(Charge) == 0
    card = _card(a)  # the first card is the default, as before
    assert card["default"] is True
    assert _defaults(a) == [card["id"]]


def test_adding_a_bank_transfer_as_default_is_refused_and_writes_nothing() -> None:
    a = _account()
    card = _card(a)
    before = (_count(PaymentMethod), _count(Event))
    with pytest.raises(ValidationError) as info:
        _add(a, "bank_transfer", make_default=True)
    assert info.value.field == "default"
    assert (_count(PaymentMethod), _count(Event)) == before
    assert _defaults(a) == [card["id"]]


def test_a_bank_transfer_left_default_by_an_older_version_is_not_charged_by_default() -> None:
    """Rows written before this rule: the default flag on a bank transfer is ignored."""
    a = _account()
    bank = _bank(a)
    with unit_of_work() as uow:  # what an older version wrote for a first bank transfer
        row = uow.session.get(PaymentMethod, bank["id"])
        assert row is not None
        row.is_default = True
    with pytest.raises(NotFound) as info:
        _top_up(a, "legacy")
    assert info.value.field == "payment_method_id"
    assert _count(Charge) == 0
    card = _card(a)  # a card added now becomes the default in its place
    assert card["default"] is True
    assert _defaults(a) == [card["id"]]
    assert _top_up(a, "legacy-then-card")["payment_method_id"] == card["id"]


# --- set-default -------------------------------------------------------------------------------


def test_set_default_moves_the_default_with_an_event_and_is_idempotent() -> None:
    a = _account()
    card = _card(a)
    paypal = _add(a, "paypal", f"{PAYPAL}:{a}")
    shown = _set_default(a, paypal["id"])
    assert (shown["id"], shown["default"]) == (paypal["id"], True)
    assert _defaults(a) == [paypal["id"]]
    [changed] = _events("payment_method.default_changed", a)
    assert changed.data["previous_payment_method_id"] == card["id"]
    assert changed.data["reason"] == "operator"
    again = _set_default(a, paypal["id"])  # already the default: nothing changes
    assert again["default"] is True
    assert len(_events("payment_method.default_changed", a)) == 1
    assert _top_up(a, "after-set")["payment_method_id"] == paypal["id"]


def test_set_default_refuses_a_bank_transfer_and_changes_nothing() -> None:
    a = _account()
    card = _card(a)
    bank = _bank(a)
    with pytest.raises(ValidationError) as info:
        _set_default(a, bank["id"])
    assert info.value.field == "payment_method_id"
    assert "bank transfer" in str(info.value)
    assert _defaults(a) == [card["id"]]
    assert _events("payment_method.default_changed", a) == []


@pytest.mark.parametrize("method", ["pm_missing", "", "removed", "other_account"])
def test_set_default_refuses_a_method_that_is_not_this_accounts(method: str) -> None:
    a, b = _account(), _account()
    card = _card(a, ":keep")
    gone = _card(a, ":gone")
    _remove(a, gone["id"])
    other = _card(b)
    method_id = {"removed": gone["id"], "other_account": other["id"]}.get(method, method)
    with pytest.raises((NotFound, ValidationError)) as info:
        _set_default(a, method_id)
    assert info.value.field == "payment_method_id"
    assert _defaults(a) == [card["id"]]
    assert _defaults(b) == [other["id"]]


# --- remove says when it turned auto-reload off --------------------------------------------------


def _auto_reload_on(account_id: str, method_id: str, enabled: bool = True) -> None:
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        account.auto_reload_enabled = enabled
        account.auto_reload_method_id = method_id
        account.auto_reload_threshold = Decimal("5")
        account.auto_reload_amount = Decimal("20")


def test_remove_says_whether_it_turned_auto_reload_off() -> None:
    a = _account()
    card = _card(a, ":1")
    other = _card(a, ":2")
    _auto_reload_on(a, card["id"])
    assert _remove(a, other["id"])["auto_reload_disabled"] is False
    assert _remove(a, card["id"])["auto_reload_disabled"] is True
    assert len(_events("auto_reload.disabled", a)) == 1


def test_remove_of_a_method_kept_by_an_auto_reload_already_off_says_false() -> None:
    a = _account()
    card = _card(a)
    _auto_reload_on(a, card["id"], enabled=False)
    removed = _remove(a, card["id"])
    assert removed["auto_reload_disabled"] is False
    assert _events("auto_reload.disabled", a) == []
    with unit_of_work() as uow:
        account = uow.session.get(Account, a)
        assert account is not None
        assert account.auto_reload_method_id is None  # forgotten all the same


# --- balancectl ----------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("balancectl")
    return subprocess.run(
        [str(script), *args, "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _ok(*args: str) -> Any:
    result = _cli(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def _refused(result: subprocess.CompletedProcess[str], field: str) -> dict[str, Any]:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], result.stderr
    error: dict[str, Any] = json.loads(result.stdout)["error"]
    assert error["field"] == field
    return error


def test_cli_the_reported_fault_set_default_and_remove_output() -> None:
    a = _account()
    card = _ok("methods", "add", a, "--psp", "braintree", "--nonce", f"{CARD}:cli")
    bank = _ok("methods", "add", a, "--psp", "bank_transfer")
    assert (card["default"], bank["default"]) == (True, False)
    _ok("auto-reload", "set", a, "--threshold", "1", "--amount", "20", "--method", card["id"])

    removed = _ok("methods", "remove", a, card["id"])
    assert removed["auto_reload_disabled"] is True
    assert removed["default_payment_method_id"] is None
    assert _ok("accounts", "show", a)["auto_reload"]["enabled"] is False

    # `top-up ID 5` no longer opens a pending bank-transfer charge: refused, by name.
    _refused(_cli("top-up", a, "5"), "payment_method_id")
    assert _ok("charges", a) == []

    _refused(_cli("methods", "set-default", a, bank["id"]), "payment_method_id")
    _refused(_cli("methods", "add", a, "--psp", "bank_transfer", "--default"), "default")

    paypal = _ok("methods", "add", a, "--psp", "paypal", "--nonce", f"{PAYPAL}:cli")
    assert paypal["default"] is True  # the first chargeable method since the card went
    card2 = _ok("methods", "add", a, "--psp", "braintree", "--nonce", f"{CARD}:cli2")
    shown = _ok("methods", "set-default", a, card2["id"])
    assert (shown["id"], shown["default"]) == (card2["id"], True)
    listed = {m["id"]: m["default"] for m in _ok("methods", "list", a)}
    assert listed == {bank["id"]: False, paypal["id"]: False, card2["id"]: True}
    top_up = _ok("top-up", a, "5")
    assert (top_up["payment_method_id"], top_up["status"]) == (card2["id"], "succeeded")

    other = _ok("methods", "remove", a, paypal["id"])  # not the default, no auto-reload
    assert other["auto_reload_disabled"] is False
    assert other["default_payment_method_id"] == card2["id"]


def test_cli_remove_human_output_says_auto_reload_was_turned_off() -> None:
    a = _account()
    card = _ok("methods", "add", a, "--psp", "braintree", "--nonce", f"{CARD}:human")
    _ok("auto-reload", "set", a, "--threshold", "1", "--amount", "20")
    script = Path(sys.executable).with_name("balancectl")
    result = subprocess.run(
        [str(script), "methods", "remove", a, card["id"]],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "auto_reload_disabled: True" in result.stdout
