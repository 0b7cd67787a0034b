"""Payment methods: PSP tokens only, one card or PayPal account per customer account.

Services against real PostgreSQL (no broker), plus `balancectl methods/top-up/charges`
as a real process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from worker.accounts import service as accounts
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.base import new_id
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import (
    DomainError,
    NotFound,
    PaymentMethodInUse,
    PaymentMethodRefused,
    ValidationError,
)
from worker.ledger.models import Account
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods
from worker.payment_methods.models import PaymentMethod

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

# --- helpers ---------------------------------------------------------------------------------


def _account(name: str = "Methods") -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name=name, now=now())["id"])


def _add(
    account_id: str,
    nonce: str | None = "fake-valid-visa-nonce",
    psp: str = "braintree",
    make_default: bool = False,
) -> dict[str, Any]:

    with unit_of_work() as uow:
        return payment_methods.add(
            uow, account_id=account_id, psp=psp, nonce=nonce, make_default=make_default, now=now()
        )


def _remove(account_id: str, method_id: str) -> dict[str, Any]:
    with unit_of_work() as uow:
        return payment_methods.remove(uow, account_id=account_id, method_id=method_id, now=now())


def _list(account_id: str) -> list[dict[str, Any]]:
    with unit_of_work() as uow:
        return payment_methods.list_for(uow.session, account_id)


def _count(model: Any, *where: Any) -> int:
    with unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _snapshot(account_id: str | None = None) -> tuple[int, int]:
    """(payment method rows, event rows), optionally for one account only."""
    if account_id is None:
        return _count(PaymentMethod), _count(Event)
    return (
        _count(PaymentMethod, PaymentMethod.account_id == account_id),
        _count(Event, Event.account_id == account_id),
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


def _events(type_: str, account_id: str | None = None) -> list[Event]:
    with unit_of_work() as uow:
        query = select(Event).where(Event.type == type_)
        if account_id is not None:
            query = query.where(Event.account_id == account_id)
        return list(uow.session.scalars(query))


def _row(method_id: str) -> PaymentMethod:
    with unit_of_work() as uow:
        row = uow.session.get(PaymentMethod, method_id)
        assert row is not None
        return row


def _refused(exc: DomainError, field: str, code: str) -> None:
    assert exc.field == field
    assert exc.code == code
    assert field in str(exc)


# --- vaulting: the Braintree sandbox nonces --------------------------------------------------

CARDS = [
    ("fake-valid-nonce", "Visa", "1881"),
    ("fake-valid-visa-nonce", "Visa", "1881"),
    ("fake-valid-mastercard-nonce", "MasterCard", "4444"),
    ("fake-valid-amex-nonce", "American Express", "0005"),
]


@pytest.mark.parametrize(("nonce", "brand", "last4"), CARDS)
def test_card_nonces_vault_a_card_with_brand_last4_and_expiry(
    nonce: str, brand: str, last4: str
) -> None:
    account_id = _account()
    method = _add(account_id, nonce)
    assert {"id", "type", "psp", "display"} <= set(method)
    assert (method["type"], method["psp"]) == ("card", "braintree")
    assert (method["brand"], method["last4"]) == (brand, last4)
    assert re.fullmatch(r"(0[1-9]|1[0-2])/(\d{2}|\d{4})", method["expiry"] or "")
    assert brand in method["display"] and last4 in method["display"]
    assert method["account_id"] == account_id
    row = _row(method["id"])
    assert row.token and row.token != nonce  # the PSP's token, not the nonce
    assert row.fingerprint
    assert row.removed_at is None
    [event] = _events("payment_method.added", account_id)
    assert event.data["payment_method_id"] == method["id"]
    assert [m["id"] for m in _list(account_id)] == [method["id"]]


def test_paypal_billing_agreement_nonce_vaults_a_paypal_account_with_payer_email() -> None:
    account_id = _account()
    method = _add(account_id, "fake-paypal-billing-agreement-nonce")
    assert (method["type"], method["psp"]) == ("paypal", "braintree")
    assert method["payer_email"] and "@" in method["payer_email"]
    assert method["payer_email"] in method["display"]
    assert method["last4"] is None and method["brand"] is None


def test_psp_paypal_accepts_only_the_billing_agreement_nonce() -> None:
    account_id = _account()
    method = _add(account_id, "fake-paypal-billing-agreement-nonce:pp", psp="paypal")
    assert (method["type"], method["psp"]) == ("paypal", "paypal")
    assert "@" in (method["payer_email"] or "")
    before = _snapshot()
    for nonce in ("fake-valid-visa-nonce", "fake-valid-mastercard-nonce:x", "not-a-nonce"):
        with pytest.raises(PaymentMethodRefused) as info:
            _add(account_id, nonce, psp="paypal")
        _refused(info.value, "nonce", "payment_method_refused")
    assert _snapshot() == before


@pytest.mark.parametrize("psp", ["braintree", "paypal"])
@pytest.mark.parametrize(
    "nonce",
    [
        "fake-processor-declined-visa-nonce",
        "fake-processor-declined-visa-nonce:tagged",
        "fake-consumed-nonce",
        "fake-consumed-nonce:tagged",
        "fake-no-such-nonce",
    ],
)
def test_refused_nonces_name_the_field_and_write_nothing(psp: str, nonce: str) -> None:
    account_id = _account()
    before = _snapshot()
    with pytest.raises(PaymentMethodRefused) as info:
        _add(account_id, nonce, psp=psp)
    _refused(info.value, "nonce", "payment_method_refused")
    assert _snapshot() == before
    assert _list(account_id) == []


def test_declined_and_consumed_nonces_say_why() -> None:
    account_id = _account()
    with pytest.raises(PaymentMethodRefused) as declined:
        _add(account_id, "fake-processor-declined-visa-nonce")
    with pytest.raises(PaymentMethodRefused) as consumed:
        _add(account_id, "fake-consumed-nonce")
    assert "declined" in str(declined.value).lower() or "verif" in str(declined.value).lower()
    assert "consumed" in str(consumed.value).lower() or "used" in str(consumed.value).lower()


@pytest.mark.parametrize(
    ("psp", "nonce", "field"),
    [
        ("braintree", None, "nonce"),
        ("braintree", "   ", "nonce"),
        ("braintree", "x" * 201, "nonce"),
        ("stripe", "fake-valid-visa-nonce", "psp"),
        ("", "fake-valid-visa-nonce", "psp"),
        ("braintree", "4111111111111111", "nonce"),
        ("braintree", "4111 1111 1111 1111", "nonce"),
        ("braintree", "fake-valid-visa-nonce:4111-1111-1111-1111", "nonce"),
        ("bank_transfer", "4242424242424242", "nonce"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    psp: str, nonce: str | None, field: str
) -> None:
    account_id = _account()
    before = _snapshot()
    with pytest.raises(ValidationError) as info:
        _add(account_id, nonce, psp=psp)
    assert info.value.field == field
    assert _snapshot() == before
    if nonce and re.search(r"\d{4}", nonce):  # a card number is never echoed
        assert re.sub(r"\D", "", nonce) not in re.sub(r"\D", "", str(info.value))


def test_unknown_account_is_not_found() -> None:
    with pytest.raises(NotFound) as info:
        _add("acc_missing")
    assert info.value.field == "account_id"
    assert _snapshot() == (0, 0)
    with pytest.raises(NotFound) as info:
        _list("acc_missing")
    assert info.value.field == "account_id"


# --- one card or PayPal account, one customer account -------------------------------------------


def test_a_tagged_card_belongs_to_one_account_only() -> None:
    a, b = _account("A"), _account("B")
    first = _add(a, "fake-valid-visa-nonce:alice")
    before_b = _snapshot(b)
    before_all = _snapshot()
    with pytest.raises(PaymentMethodInUse) as info:
        _add(b, "fake-valid-visa-nonce:alice")
    _refused(info.value, "nonce", "payment_method_in_use")
    assert _snapshot(b) == before_b == (0, 0)
    assert _snapshot() == before_all
    assert _list(b) == []

    bob = _add(b, "fake-valid-visa-nonce:bob")  # another tag is another card
    assert bob["type"] == "card" and bob["id"] != first["id"]
    assert [m["id"] for m in _list(a)] == [first["id"]]


def test_the_same_card_twice_on_one_account_is_the_same_method() -> None:
    a = _account()
    first = _add(a, "fake-valid-visa-nonce:alice")
    events_before = _count(Event)
    again = _add(a, "fake-valid-visa-nonce:alice")
    assert again["id"] == first["id"]
    assert _count(PaymentMethod) == 1
    assert _count(Event) == events_before
    assert [m["id"] for m in _list(a)] == [first["id"]]


def test_untagged_and_tagged_nonces_are_distinct_cards() -> None:
    a = _account()
    plain = _add(a, "fake-valid-visa-nonce")
    tagged = _add(a, "fake-valid-visa-nonce:carol")
    assert plain["id"] != tagged["id"]
    assert _count(PaymentMethod) == 2


def test_one_paypal_account_cannot_be_saved_on_two_accounts_through_either_psp() -> None:
    a, b = _account("A"), _account("B")
    _add(a, "fake-paypal-billing-agreement-nonce:dave", psp="braintree")
    with pytest.raises(PaymentMethodInUse) as info:
        _add(b, "fake-paypal-billing-agreement-nonce:dave", psp="paypal")
    _refused(info.value, "nonce", "payment_method_in_use")
    with pytest.raises(PaymentMethodInUse):
        _add(b, "fake-paypal-billing-agreement-nonce:dave", psp="braintree")
    assert _snapshot(b) == (0, 0)
    other = _add(b, "fake-paypal-billing-agreement-nonce:erin", psp="paypal")
    assert other["type"] == "paypal"


def test_paypal_first_via_paypal_then_via_braintree_is_refused_too() -> None:
    a, b = _account("A"), _account("B")
    _add(a, "fake-paypal-billing-agreement-nonce:frank", psp="paypal")
    with pytest.raises(PaymentMethodInUse):
        _add(b, "fake-paypal-billing-agreement-nonce:frank", psp="braintree")
    assert _snapshot(b) == (0, 0)


def test_after_removal_the_card_can_be_saved_on_another_account() -> None:
    a, b = _account("A"), _account("B")
    card = _add(a, "fake-valid-visa-nonce:alice")
    with pytest.raises(PaymentMethodInUse):
        _add(b, "fake-valid-visa-nonce:alice")
    removed = _remove(a, card["id"])
    assert removed["removed"] is True
    moved = _add(b, "fake-valid-visa-nonce:alice")
    assert moved["account_id"] == b
    assert moved["id"] != card["id"]
    assert _list(a) == []
    # And now A is the one refused.
    with pytest.raises(PaymentMethodInUse):
        _add(a, "fake-valid-visa-nonce:alice")


def _raw_method(account_id: str, fingerprint: str, **kw: Any) -> PaymentMethod:
    values: dict[str, Any] = {
        "id": new_id("pm"),
        "account_id": account_id,
        "psp": "braintree",
        "type": "card",
        "token": f"bt_{new_id('t')[-12:]}",
        "fingerprint": fingerprint,
        "display": "Visa ending 1881",
        "is_default": False,
        "created_at": now(),
        "removed_at": None,
    }
    values.update(kw)
    return PaymentMethod(**values)


def test_the_database_itself_enforces_one_active_method_per_fingerprint() -> None:
    a, b = _account("A"), _account("B")
    card = _add(a, "fake-valid-visa-nonce:alice")
    fingerprint = _row(card["id"]).fingerprint
    assert fingerprint

    with pytest.raises(IntegrityError), unit_of_work() as uow:  # bypass the service's check
        uow.session.add(_raw_method(b, fingerprint))
        uow.session.flush()
    with pytest.raises(IntegrityError), unit_of_work() as uow:  # also on the same account
        uow.session.add(_raw_method(a, fingerprint))
        uow.session.flush()
    assert _count(PaymentMethod) == 1

    with unit_of_work() as uow:  # a removed row with that fingerprint does not block
        uow.session.add(_raw_method(b, fingerprint, removed_at=now()))
    assert _count(PaymentMethod) == 2

    _remove(a, card["id"])
    with unit_of_work() as uow:  # once the active one is removed, a new active row is fine
        uow.session.add(_raw_method(b, fingerprint))
    assert _count(PaymentMethod, PaymentMethod.removed_at.is_(None)) == 1


def test_two_accounts_saving_the_same_card_at_once_one_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = _account("A"), _account("B")
    start = threading.Barrier(2)
    # Both requests pass the "is it already saved?" look-up before either inserts, so
    # only the database's unique index can keep the card on one account.
    checked = threading.Barrier(2)
    original_active = payment_methods._active

    def active_after_both_checked(session: Any, account_id: str) -> list[PaymentMethod]:
        # An implementation that serialises the two requests is fine too (no waiting).
        with contextlib.suppress(threading.BrokenBarrierError):
            checked.wait(timeout=3)
        return original_active(session, account_id)

    monkeypatch.setattr(payment_methods, "_active", active_after_both_checked)
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, BaseException] = {}

    def run(account_id: str) -> None:
        start.wait(timeout=10)
        try:
            with unit_of_work() as uow:
                results[account_id] = payment_methods.add(
                    uow,
                    account_id=account_id,
                    psp="braintree",
                    nonce="fake-valid-visa-nonce:race",
                    now=now(),
                )
        except BaseException as exc:
            errors[account_id] = exc

    threads = [threading.Thread(target=run, args=(x,)) for x in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    monkeypatch.undo()
    assert len(results) == 1, (results, errors)
    assert len(errors) == 1, errors
    [(loser, error)] = errors.items()
    assert isinstance(error, PaymentMethodInUse), repr(error)
    assert error.field == "nonce"
    [winner] = results
    assert _count(PaymentMethod) == 1
    assert _snapshot(loser) == (0, 0)
    assert [m["id"] for m in _list(winner)] == [results[winner]["id"]]


# --- the default method ----------------------------------------------------------------------


def test_first_method_is_default_and_make_default_moves_it() -> None:
    a = _account()
    first = _add(a, "fake-valid-visa-nonce")
    assert first["default"] is True
    second = _add(a, "fake-valid-mastercard-nonce")
    assert second["default"] is False
    assert _defaults(a) == [first["id"]]
    third = _add(a, "fake-paypal-billing-agreement-nonce", make_default=True)
    assert third["default"] is True
    assert _defaults(a) == [third["id"]]
    listed = {m["id"]: m["default"] for m in _list(a)}
    assert listed == {first["id"]: False, second["id"]: False, third["id"]: True}


def test_defaults_are_per_account() -> None:
    a, b = _account("A"), _account("B")
    ma = _add(a, "fake-valid-visa-nonce:a")
    mb = _add(b, "fake-valid-visa-nonce:b")
    assert ma["default"] and mb["default"]
    _add(b, "fake-valid-amex-nonce:b", make_default=True)
    assert _defaults(a) == [ma["id"]]


def test_removing_the_default_promotes_another_and_removing_others_keeps_it() -> None:
    a = _account()
    m1 = _add(a, "fake-valid-visa-nonce")
    m2 = _add(a, "fake-valid-mastercard-nonce")
    m3 = _add(a, "fake-valid-amex-nonce")
    _remove(a, m2["id"])  # not the default: unchanged
    assert _defaults(a) == [m1["id"]]
    _remove(a, m1["id"])
    assert _defaults(a) == [m3["id"]]
    assert _row(m1["id"]).is_default is False
    _remove(a, m3["id"])
    assert _defaults(a) == []
    assert _list(a) == []
    again = _add(a, "fake-valid-visa-nonce:new")  # the account starts over
    assert again["default"] is True


def test_the_database_allows_one_default_per_account() -> None:
    a = _account()
    _add(a, "fake-valid-visa-nonce")
    with pytest.raises(IntegrityError), unit_of_work() as uow:
        uow.session.add(_raw_method(a, "fp-second-default", is_default=True))
        uow.session.flush()


def test_top_up_without_a_method_uses_the_default() -> None:
    a = _account()
    card = _add(a, "fake-valid-visa-nonce")
    with unit_of_work() as uow:
        first = top_ups.top_up(uow, account_id=a, amount="10.00", idempotency_key="pm-default-1")
    assert first["status"] == "succeeded"
    assert (first["payment_method_id"], first["psp"]) == (card["id"], "braintree")

    paypal = _add(a, "fake-paypal-billing-agreement-nonce", psp="paypal", make_default=True)
    assert _defaults(a) == [paypal["id"]]
    with unit_of_work() as uow:
        second = top_ups.top_up(uow, account_id=a, amount="5.00", idempotency_key="pm-default-2")
    assert (second["payment_method_id"], second["psp"]) == (paypal["id"], "paypal")
    assert second["status"] == "succeeded"
    assert second["balance"] == "15.00"

    _remove(a, paypal["id"])
    with unit_of_work() as uow:
        third = top_ups.top_up(uow, account_id=a, amount="1.00", idempotency_key="pm-default-3")
    assert third["payment_method_id"] == card["id"]
    assert third["balance"] == "16.00"


def test_adding_a_saved_method_again_as_default_makes_it_the_default() -> None:
    a = _account()
    card = _add(a, "fake-valid-visa-nonce")
    paypal = _add(a, "fake-paypal-billing-agreement-nonce")
    assert _defaults(a) == [card["id"]]
    again = _add(a, "fake-paypal-billing-agreement-nonce", make_default=True)
    assert again["id"] == paypal["id"]
    assert _count(PaymentMethod) == 2
    assert again["default"] is True
    assert _defaults(a) == [paypal["id"]]


def test_top_up_with_no_method_at_all_is_refused() -> None:
    a = _account()
    with pytest.raises(NotFound) as info, unit_of_work() as uow:
        top_ups.top_up(uow, account_id=a, amount="10.00", idempotency_key="pm-none")
    assert info.value.field == "payment_method_id"
    assert _count(Charge) == 0


def test_top_up_with_a_removed_method_is_refused() -> None:
    a = _account()
    card = _add(a, "fake-valid-visa-nonce")
    _add(a, "fake-valid-mastercard-nonce")
    _remove(a, card["id"])
    with pytest.raises(NotFound) as info, unit_of_work() as uow:
        top_ups.top_up(
            uow,
            account_id=a,
            amount="10.00",
            idempotency_key="pm-removed",
            payment_method_id=card["id"],
        )
    assert info.value.field == "payment_method_id"
    assert _count(Charge) == 0


# --- auto-reload and removal ------------------------------------------------------------------


def _enable_auto_reload(account_id: str, method_id: str) -> None:
    with unit_of_work() as uow:
        account = uow.session.get(Account, account_id)
        assert account is not None
        account.auto_reload_enabled = True
        account.auto_reload_method_id = method_id
        account.auto_reload_threshold = Decimal("5")
        account.auto_reload_amount = Decimal("20")


def _auto_reload(account_id: str) -> dict[str, Any]:
    with unit_of_work() as uow:
        settings: dict[str, Any] = accounts.view(accounts.get(uow.session, account_id))[
            "auto_reload"
        ]
        return settings


def test_removing_the_auto_reload_method_turns_auto_reload_off_with_an_event() -> None:
    a = _account()
    card = _add(a, "fake-valid-visa-nonce")
    _enable_auto_reload(a, card["id"])
    _remove(a, card["id"])
    settings = _auto_reload(a)
    assert settings["enabled"] is False
    assert settings["payment_method_id"] is None
    [event] = _events("auto_reload.disabled", a)
    assert event.data["reason"] == "payment_method_removed"
    assert event.data["payment_method_id"] == card["id"]
    assert _events("payment_method.removed", a)


def test_removing_another_method_leaves_auto_reload_on() -> None:
    a = _account()
    card = _add(a, "fake-valid-visa-nonce")
    paypal = _add(a, "fake-paypal-billing-agreement-nonce")
    _enable_auto_reload(a, paypal["id"])
    _remove(a, card["id"])  # the default, but not the auto-reload method
    settings = _auto_reload(a)
    assert settings["enabled"] is True
    assert settings["payment_method_id"] == paypal["id"]
    assert _events("auto_reload.disabled") == []


def test_removing_a_card_used_by_another_accounts_auto_reload_is_impossible() -> None:
    a, b = _account("A"), _account("B")
    card_a = _add(a, "fake-valid-visa-nonce:a")
    _enable_auto_reload(a, card_a["id"])
    with pytest.raises(NotFound) as info:
        _remove(b, card_a["id"])
    assert info.value.field == "payment_method_id"
    assert _auto_reload(a)["enabled"] is True
    assert _row(card_a["id"]).removed_at is None
    assert _events("auto_reload.disabled") == []


# --- bank transfer, listing, removal -------------------------------------------------------------


def test_bank_transfer_vaults_without_a_nonce() -> None:
    a, b = _account("A"), _account("B")
    method = _add(a, None, psp="bank_transfer")
    assert (method["type"], method["psp"]) == ("bank_transfer", "bank_transfer")
    assert method["display"]
    # Never the default by itself, even as the first method (issue 11 item 4): a top-up
    # without a method must not quietly open a pending bank-transfer charge.
    assert method["default"] is False
    assert _row(method["id"]).fingerprint is None
    # Bank transfer is not a card: many accounts may have one.
    assert _add(b, None, psp="bank_transfer")["type"] == "bank_transfer"


def test_list_shows_only_methods_that_are_not_removed() -> None:
    a, b = _account("A"), _account("B")
    m1 = _add(a, "fake-valid-visa-nonce")
    m2 = _add(a, "fake-paypal-billing-agreement-nonce")
    m3 = _add(a, None, psp="bank_transfer")
    _add(b, "fake-valid-visa-nonce:other")
    assert [m["id"] for m in _list(a)] == [m1["id"], m2["id"], m3["id"]]
    _remove(a, m2["id"])
    listed = _list(a)
    assert [m["id"] for m in listed] == [m1["id"], m3["id"]]
    assert all(m["account_id"] == a for m in listed)
    assert _count(PaymentMethod, PaymentMethod.account_id == a) == 3  # kept, marked removed
    assert _row(m2["id"]).removed_at is not None


def test_removing_another_accounts_method_is_not_found_and_changes_nothing() -> None:
    a, b = _account("A"), _account("B")
    card_a = _add(a, "fake-valid-visa-nonce:a")
    _add(b, "fake-valid-visa-nonce:b")
    before = _snapshot()
    with pytest.raises(NotFound) as info:
        _remove(b, card_a["id"])
    _refused(info.value, "payment_method_id", "not_found")
    assert _snapshot() == before
    assert [m["id"] for m in _list(a)] == [card_a["id"]]


def test_removing_twice_or_an_unknown_method_is_not_found() -> None:
    a = _account()
    card = _add(a)
    _remove(a, card["id"])
    before = _snapshot()
    for method_id in (card["id"], "pm_missing"):
        with pytest.raises(NotFound) as info:
            _remove(a, method_id)
        assert info.value.field == "payment_method_id"
    with pytest.raises(ValidationError) as bad:
        _remove(a, "")
    assert bad.value.field == "payment_method_id"
    assert _snapshot() == before


# --- balancectl --------------------------------------------------------------------------------

CHARGE_FIELDS = {
    "id",
    "amount",
    "currency",
    "status",
    "purpose",
    "psp",
    "psp_reference",
    "decline_code",
    "available_on",
    "settlement_status",
    "created_at",
}


def _balancectl(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("balancectl")
    command = [str(script)] if script.exists() else [shutil.which("balancectl") or "balancectl"]
    return subprocess.run(
        [*command, *args], env=dict(os.environ), capture_output=True, text=True, timeout=60
    )


def _ok(*args: str) -> Any:
    result = _balancectl(*args, "--json")
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_cli_methods_add_list_top_up_charges_remove() -> None:
    a = _account()
    method = _ok("methods", "add", a, "--psp", "braintree", "--nonce", "fake-valid-visa-nonce:cli")
    assert {"id", "type", "psp", "display"} <= set(method)
    assert (method["type"], method["psp"], method["last4"]) == ("card", "braintree", "1881")
    assert isinstance(method["id"], str) and method["id"]

    listed = _ok("methods", "list", a)
    assert [m["id"] for m in listed] == [method["id"]]
    assert listed[0]["default"] is True

    top_up = _ok("top-up", a, "10.00")
    assert top_up["status"] == "succeeded"
    assert top_up["balance"] == "10.00"

    [charge] = _ok("charges", a)
    assert set(charge) >= CHARGE_FIELDS
    assert (charge["amount"], charge["currency"], charge["status"]) == ("10.00", "EUR", "succeeded")
    assert (charge["purpose"], charge["psp"]) == ("top_up", "braintree")
    assert charge["psp_reference"] and charge["decline_code"] is None
    assert charge["id"] == top_up["charge_id"]
    assert charge["settlement_status"] == "pending"

    removed = _ok("methods", "remove", a, method["id"])
    assert removed["id"] == method["id"] and removed["removed"] is True
    assert _ok("methods", "list", a) == []


def test_cli_refuses_a_card_number_as_nonce_without_echoing_it() -> None:
    a = _account()
    for pan in ("4111111111111111", "4111 1111 1111 1111"):
        result = _balancectl("methods", "add", a, "--psp", "braintree", "--nonce", pan, "--json")
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "nonce" in result.stderr
        assert "Traceback" not in result.stderr
        for stream in (result.stdout, result.stderr):
            assert "4111111111111111" not in re.sub(r"[\s-]", "", stream)
            assert pan not in stream
        error = json.loads(result.stdout)["error"]
        assert error["field"] == "nonce"
    assert _snapshot() == (0, 0)


def test_cli_second_account_is_refused_for_a_card_in_use() -> None:
    a, b = _account("A"), _account("B")
    _add(a, "fake-valid-visa-nonce:cli-taken")
    result = _balancectl(
        "methods", "add", b, "--psp", "braintree", "--nonce", "fake-valid-visa-nonce:cli-taken"
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "nonce" in result.stderr
    assert _snapshot(b) == (0, 0)
