"""WeChat Pay through the engine (issue 17; seeds 000/001): a `wechat_pay` method only for
accounts in AU, CN, HK, ID, MY, NZ, PH or TW (refused elsewhere naming `country`), top-ups
only (never a default, never auto-reload), a QR-code payment that is `pending` until the payer
pays and is then completed by the janitor's look-up (`balance.payments.sync_pending`), or
closed unpaid when its QR code expires."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select

from config import get_settings, reset_settings
from worker.accounts import service as accounts
from worker.auto_reload import configure
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.invoices.models import Invoice
from worker.kernel.errors import ValidationError
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods
from worker.payment_methods.models import PaymentMethod
from worker.psp.wechat_pay import ALLOWED_COUNTRIES, QR_PREFIX, WechatPaySandbox

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _wechat_enabled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PSP_ENABLED", "braintree,paypal,bank_transfer,wechat_pay")
    reset_settings()
    yield
    monkeypatch.delenv("PSP_ENABLED")
    reset_settings()


def _account(country: str, currency: str = "CNY") -> str:
    with unit_of_work() as uow:
        return str(
            accounts.create(
                uow,
                name=f"WeChat {country}",
                country=country,
                currency=currency,
                emails=["ops@example.com"],
                now=T0,
            )["id"]
        )


def _add(account_id: str, psp: str = "wechat_pay", **extra: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return payment_methods.add(uow, account_id=account_id, psp=psp, now=T0, **extra)


def _written(account_id: str) -> tuple[int, int]:
    with unit_of_work() as uow:
        methods = uow.session.scalar(
            select(func.count())
            .select_from(PaymentMethod)
            .where(PaymentMethod.account_id == account_id)
        )
        events = uow.session.scalar(
            select(func.count()).select_from(Event).where(
                Event.account_id == account_id, Event.type.like("payment_method.%")
            )
        )  # fmt: skip
        return int(methods or 0), int(events or 0)


def _top_up(account_id: str, method_id: str, key: str, amount: str = "100.00") -> dict[str, Any]:
    with time_machine.travel(T0, tick=False), unit_of_work() as uow:
        return top_ups.top_up(
            uow,
            account_id=account_id,
            amount=amount,
            idempotency_key=key,
            payment_method_id=method_id,
        )


def _sync(at: datetime) -> janitor.SyncResult:
    with time_machine.travel(at, tick=False), unit_of_work() as uow:
        return janitor.sync_pending(uow, at)


def _charge(charge_id: str) -> Charge:
    with unit_of_work() as uow:
        charge = uow.session.get(Charge, charge_id)
        assert charge is not None
        uow.session.expunge(charge)
        return charge


@pytest.mark.parametrize("country", sorted(ALLOWED_COUNTRIES))
def test_wechat_pay_is_added_for_the_seed_countries(country: str) -> None:
    account_id = _account(country)
    method = _add(account_id)
    assert (method["type"], method["psp"], method["default"]) == ("wechat_pay", "wechat_pay", False)
    assert method["display"] == "WeChat Pay (QR code)"


@pytest.mark.parametrize("country", ["GB", "JP", "US", "SG"])
def test_wechat_pay_is_refused_elsewhere_naming_country_and_writes_nothing(country: str) -> None:
    account_id = _account(country, currency="EUR")
    with pytest.raises(ValidationError) as refused:
        _add(account_id)
    assert refused.value.field == "country"
    assert country in str(refused.value) and "CN" in str(refused.value)
    assert _written(account_id) == (0, 0)


def test_wechat_pay_is_never_the_default_nor_used_for_auto_reload() -> None:
    account_id = _account("HK", currency="HKD")
    wechat = _add(account_id)["id"]  # the first method: still not the default
    with pytest.raises(ValidationError) as as_default:
        _add(account_id, make_default=True)
    assert as_default.value.field == "default"
    assert "WeChat Pay" in str(as_default.value)
    with unit_of_work() as uow, pytest.raises(ValidationError) as set_default:
        payment_methods.set_default(uow, account_id=account_id, method_id=wechat, now=T0)
    assert set_default.value.field == "payment_method_id"
    with unit_of_work() as uow, pytest.raises(ValidationError) as reload:
        configure.configure(
            uow, account_id=account_id, threshold="10", amount="50", method_id=wechat, now=T0
        )
    assert reload.value.field == "method"
    assert "WeChat Pay" in str(reload.value)
    with unit_of_work() as uow, pytest.raises(Exception) as no_default:  # nothing to pick
        top_ups.top_up(uow, account_id=account_id, amount="5", idempotency_key="no-default")
    assert getattr(no_default.value, "field", None) == "payment_method_id"
    card = _add(account_id, psp="braintree", nonce=f"fake-valid-visa-nonce:{uuid.uuid4().hex}")
    assert card["default"] is True  # a card added after it becomes the default, as ever
    with unit_of_work() as uow:
        shown = configure.configure(uow, account_id=account_id, threshold="10", amount="50", now=T0)
    assert shown["auto_reload"]["payment_method_id"] == card["id"]


def test_a_qr_code_top_up_is_pending_until_paid_then_the_janitor_completes_it() -> None:
    account_id = _account("CN")
    wechat = _add(account_id)["id"]
    first = _top_up(account_id, wechat, "wx-top-up-1")
    assert (first["status"], first["balance"], first["psp"]) == ("pending", "0.00", "wechat_pay")
    instructions = first["payment_instructions"]
    assert instructions["qr_code"].startswith(QR_PREFIX)
    assert instructions["psp_reference"] == first["psp_reference"]
    again = _top_up(account_id, wechat, "wx-top-up-1")  # the same key shows the same code
    assert (again["charge_id"], again["payment_instructions"]) == (first["charge_id"], instructions)
    assert _sync(T0 + timedelta(minutes=1)) == {"checked": 1, "resolved": 0}  # not paid yet
    assert _charge(first["charge_id"]).status == "pending"

    assert WechatPaySandbox(get_settings()).pay("wx-top-up-1")  # the payer scans and pays
    assert _sync(T0 + timedelta(minutes=3)) == {"checked": 1, "resolved": 1}
    paid = _charge(first["charge_id"])
    assert (paid.status, paid.needs_attention) == ("succeeded", False)
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == Decimal("100.00")
        [invoice] = list(uow.session.scalars(select(Invoice).where(Invoice.charge_id == paid.id)))
        assert (invoice.kind, invoice.status, invoice.method) == ("final", "issued", "wechat_pay")
        assert invoice.number is not None  # issued at once: paid in full, nothing to settle
    assert _sync(T0 + timedelta(days=1)) == {"checked": 0, "resolved": 0}
    assert _top_up(account_id, wechat, "wx-top-up-1")["status"] == "succeeded"  # credited once


def test_an_unpaid_qr_code_expires_and_its_charge_is_declined_without_attention() -> None:
    account_id = _account("MY", currency="MYR")
    wechat = _add(account_id)["id"]
    charge_id = _top_up(account_id, wechat, "wx-unpaid")["charge_id"]
    at, looked = T0, 0
    while _charge(charge_id).status == "pending" and looked < 20:
        due = _charge(charge_id).next_attempt_at
        assert due is not None
        at = due
        looked += _sync(at)["checked"]
    closed = _charge(charge_id)
    assert (closed.status, closed.decline_code) == ("declined", "CLOSED")
    assert closed.needs_attention is False  # an unpaid QR code is normal, not an incident
    assert at - T0 >= timedelta(hours=2)
    assert looked <= get_settings().payment_sync_attention_after
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == 0
    assert not WechatPaySandbox(get_settings()).pay("wx-unpaid")  # too late to pay it


def test_balancectl_refuses_it_by_country_and_prints_the_qr_code_of_a_top_up() -> None:
    from typer.testing import CliRunner

    from worker.cli import app as cli

    runner = CliRunner()
    elsewhere = _account("GB", currency="EUR")
    refused = runner.invoke(cli, ["methods", "add", elsewhere, "--psp", "wechat_pay", "--json"])
    assert refused.exit_code == 1, refused.output
    assert json.loads(refused.stdout)["error"]["field"] == "country"
    assert refused.stderr.startswith("error: country: ")
    account_id = _account("TW", currency="TWD")
    added = runner.invoke(cli, ["methods", "add", account_id, "--psp", "wechat_pay", "--json"])
    assert added.exit_code == 0, added.output
    method_id = json.loads(added.stdout)["id"]
    topped = runner.invoke(cli, ["top-up", account_id, "100", "--method", method_id, "--json"])
    assert topped.exit_code == 0, topped.output
    shown = json.loads(topped.stdout)
    assert shown["status"] == "pending"
    assert shown["payment_instructions"]["qr_code"].startswith(QR_PREFIX)


def test_a_country_changed_after_the_method_was_added_refuses_the_top_up() -> None:
    from worker.accounts import admin

    account_id = _account("CN")
    wechat = _add(account_id)["id"]
    with unit_of_work() as uow:
        admin.update(uow, account_id=account_id, country="GB", now=T0)
    with pytest.raises(ValidationError) as refused:
        _top_up(account_id, wechat, "wx-after-move")
    assert refused.value.field == "country"
    with unit_of_work() as uow:  # nothing written: no charge
        assert uow.session.scalar(
            select(func.count()).select_from(Charge).where(Charge.account_id == account_id)
        ) == 0  # fmt: skip
