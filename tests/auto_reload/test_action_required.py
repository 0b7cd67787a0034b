"""3-D Secure / SCA (issue 17): a charge that needs the cardholder ends `requires_action`.

A top-up simply ends so (nothing taken, nothing retried). An auto-reload pauses the account's
auto-reload (no retries, whatever the sweeps), writes `auto_reload.action_required`, mails the
customer in the account's locale, and resumes when the customer adds a new default method (a
fresh nonce). The stub answers 2099.00 this way, as Braintree's sandbox does (CONTRACT.md);
where a test needs one card to need authentication and the fresh one not, the stub's answer is
chosen by token.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from config import reset_settings
from tests.auto_reload import support as s
from worker.accounts import service as accounts
from worker.auto_reload import configure
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.db.session import unit_of_work
from worker.kernel import task_names
from worker.payment_methods import service as payment_methods
from worker.psp.base import ChargeRequest, ChargeResult, Outcome
from worker.psp.braintree import BraintreeSandbox

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SWEEP = s.SWEEP
NEEDS_ACTION = "2099.00"  # the sandbox: processor response 2099, cardholder authentication


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


def _account(
    locale: str = "en", amount: str = NEEDS_ACTION, tag: str | None = None
) -> tuple[str, str]:
    """An account at zero with a card (`tag`: which card) and auto-reload on (threshold 10):
    (account, card)."""
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(
                uow, name="Strong Auth KK", emails=["billing@example.com"], locale=locale, now=T0
            )["id"]
        )
    with unit_of_work() as uow:
        card = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{tag or uuid.uuid4().hex}",
            now=T0,
        )["id"]
    with unit_of_work() as uow:
        configure.configure(uow, account_id=account_id, threshold="10", amount=amount, now=T0)
    return account_id, str(card)


def test_a_top_up_that_needs_the_cardholder_ends_requires_action(psp_calls: list[str]) -> None:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="Top-up 3DS", now=T0)["id"]
    with unit_of_work() as uow:
        payment_methods.add(
            uow, account_id=account_id, psp="braintree", nonce="fake-valid-visa-nonce:3ds", now=T0
        )
    with unit_of_work() as uow:
        result = top_ups.top_up(
            uow, account_id=account_id, amount=NEEDS_ACTION, idempotency_key="3ds-top-up-1"
        )
    assert (result["status"], result["balance"]) == ("requires_action", "0.00")
    assert (result["decline_code"], result["decline_text"]) == (
        "2099",
        "Cardholder Authentication Required",
    )
    assert result["completed_at"] is not None  # terminal: nothing more happens to it
    assert [e.data["code"] for e in s.events(account_id, "charge.requires_action")] == ["2099"]
    # The same key again is the same charge: never sent twice, never resolved differently.
    with unit_of_work() as uow:
        again = top_ups.top_up(
            uow, account_id=account_id, amount=NEEDS_ACTION, idempotency_key="3ds-top-up-1"
        )
    assert (again["charge_id"], again["status"]) == (result["charge_id"], "requires_action")
    with unit_of_work() as uow:  # the janitor has nothing to look up
        assert janitor.sync_pending(uow, T0 + timedelta(days=1))["checked"] == 0
    assert psp_calls == ["3ds-top-up-1"]
    assert s.events(account_id, "auto_reload.action_required") == []  # not an auto-reload


@pytest.mark.parametrize(
    ("locale", "subject_word"),
    [("en", "confirm your card"), ("ja", "認証"), ("zh", "验证")],
)
def test_an_auto_reload_that_needs_the_cardholder_pauses_and_mails_once(
    psp_calls: list[str], locale: str, subject_word: str
) -> None:
    account_id, card = _account(locale)
    assert s.sweep(T0) == 1
    [charge] = s.charges(account_id)
    assert (charge.status, charge.decline_code, charge.attempts) == ("requires_action", "2099", 1)
    account = s.get(account_id)
    assert account.auto_reload_action_required_at == T0
    assert account.auto_reload_enabled  # paused, not turned off: the customer's settings stay
    assert (account.auto_reload_declines, account.auto_reload_backoff_until) == (0, None)
    [event] = s.events(account_id, "auto_reload.action_required")
    assert event.data | {"charge_id": None} == {
        "charge_id": None,
        "payment_method_id": card,
        "amount": NEEDS_ACTION,
        "currency": "EUR",
        "code": "2099",
        "text": "Cardholder Authentication Required",
    }
    [mail] = s.mails(account_id)
    assert mail.kind == "auto_reload.action_required"
    assert mail.recipients == ["billing@example.com"]
    assert subject_word in mail.subject
    assert "--default" not in mail.text_body  # the customer is told in words, not commands
    assert "2099" in mail.text_body or "Cardholder Authentication Required" in mail.text_body

    # Paused: six hours of sweeps, as of every interval, find nothing due and send nothing.
    assert sum(s.sweep(T0 + i * SWEEP) for i in range(1, 61)) == 0
    with unit_of_work() as uow:
        assert janitor.sync_pending(uow, T0 + timedelta(days=1))["checked"] == 0
    assert len(psp_calls) == 1
    assert len(s.mails(account_id)) == 1
    shown = accounts.view(s.get(account_id))["auto_reload"]
    assert shown["action_required_at"] == "2026-11-20T09:00:00+00:00"


def test_a_new_default_method_resumes_the_auto_reload(
    psp_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id, card = _account(amount="25")
    with unit_of_work() as uow:
        old_token = str(payment_methods.get_active(uow.session, account_id, card, "m").token)
    real_charge = BraintreeSandbox.charge

    def issuer_wants_3ds_for_the_old_card(self: BraintreeSandbox, request: ChargeRequest) -> Any:
        if request.token == old_token:  # the issuer wants this card authenticated first
            return self.remote.record(
                request, Outcome.REQUIRES_ACTION, f"bt_{uuid.uuid4().hex[:16]}", "2099", "3DS"
            )
        return real_charge(self, request)

    monkeypatch.setattr(BraintreeSandbox, "charge", issuer_wants_3ds_for_the_old_card)
    assert s.sweep(T0) == 1
    assert s.get(account_id).auto_reload_action_required_at == T0
    assert s.sweep(T0 + SWEEP) == 0

    # Adding a card that does not become the default resumes nothing.
    with unit_of_work() as uow:
        payment_methods.add(
            uow, account_id=account_id, psp="paypal", nonce="fake-paypal-billing-agreement-nonce:x",
            now=T0 + SWEEP,
        )  # fmt: skip
    assert s.get(account_id).auto_reload_action_required_at is not None
    assert s.sweep(T0 + 2 * SWEEP) == 0

    # The customer enters the card afresh (an authenticated nonce) as the default.
    sent: list[Any] = []
    with unit_of_work(dispatch=lambda n, a, k: sent.append((n, a))) as uow:
        fresh = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{uuid.uuid4().hex}",
            make_default=True,
            now=T0 + 3 * SWEEP,
        )["id"]
    account = s.get(account_id)
    assert (account.auto_reload_action_required_at, account.auto_reload_method_id) == (None, fresh)
    [resumed] = s.events(account_id, "auto_reload.resumed")
    assert resumed.data == {
        "reason": "new_default_method",
        "payment_method_id": fresh,
        "previous_payment_method_id": card,
    }
    # A reload is asked for at once (no wait for the next sweep).
    assert (task_names.AUTO_RELOAD_RELOAD_NOW, (account_id,)) in sent
    assert s.sweep(T0 + 4 * SWEEP) == 1
    last = s.charges(account_id)[-1]
    assert (last.payment_method_id, last.status, last.amount) == (fresh, "succeeded", 25)
    assert s.get(account_id).balance == 25
    assert len(psp_calls) == 1  # the stub's own table was asked once: for the fresh card


def test_the_same_card_entered_again_as_default_resumes_with_its_fresh_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = uuid.uuid4().hex
    account_id, _card = _account(amount="25", tag=tag)
    with unit_of_work() as uow:
        method = payment_methods.get_active(uow.session, account_id, _card, "m")
        old_token, fingerprint = str(method.token), method.fingerprint

    def needs_3ds(self: BraintreeSandbox, request: ChargeRequest) -> ChargeResult:
        outcome = Outcome.REQUIRES_ACTION if request.token == old_token else Outcome.SUCCEEDED
        return self.remote.record(request, outcome, f"bt_{uuid.uuid4().hex[:16]}", None, None)

    monkeypatch.setattr(BraintreeSandbox, "charge", needs_3ds)
    assert s.sweep(T0) == 1
    assert s.get(account_id).auto_reload_action_required_at == T0
    with unit_of_work() as uow:
        again = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{tag}",
            make_default=True,
            now=T0 + SWEEP,
        )
    assert again["id"] == _card  # the same card: one method, one fingerprint
    with unit_of_work() as uow:
        method = payment_methods.get_active(uow.session, account_id, _card, "m")
        assert (method.fingerprint, method.token != old_token) == (fingerprint, True)
    assert s.get(account_id).auto_reload_action_required_at is None
    assert s.sweep(T0 + 2 * SWEEP) == 1
    assert s.charges(account_id)[-1].status == "succeeded"


def test_set_default_to_another_method_resumes_and_while_off_clears_the_pause_silently() -> None:
    account_id, card = _account()
    with unit_of_work() as uow:
        paypal = payment_methods.add(
            uow,
            account_id=account_id,
            psp="paypal",
            nonce=f"fake-paypal-billing-agreement-nonce:{uuid.uuid4().hex}",
            now=T0,
        )["id"]
    assert s.sweep(T0) == 1
    assert s.get(account_id).auto_reload_action_required_at == T0
    with unit_of_work() as uow:
        payment_methods.set_default(uow, account_id=account_id, method_id=paypal, now=T0)
    account = s.get(account_id)
    assert (account.auto_reload_action_required_at, account.auto_reload_method_id) == (None, paypal)
    assert len(s.events(account_id, "auto_reload.resumed")) == 1

    # Paused again (the same sandbox amount), then auto-reload is turned off.
    assert s.sweep(T0 + SWEEP) == 1
    assert s.get(account_id).auto_reload_action_required_at == T0 + SWEEP
    with unit_of_work() as uow:
        configure.turn_off(uow, account_id=account_id, now=T0 + 2 * SWEEP)
    with unit_of_work() as uow:  # a default added while off clears the pause, says nothing
        payment_methods.set_default(uow, account_id=account_id, method_id=card, now=T0)
    assert s.get(account_id).auto_reload_action_required_at is None
    assert len(s.events(account_id, "auto_reload.resumed")) == 1
