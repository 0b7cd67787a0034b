"""Invoices through their services against real PostgreSQL: one per payment, by method
(seed 001), gap-free numbers under concurrency, the card 72 h rule, PDF, mail."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from pypdf import PdfReader
from sqlalchemy import select

from tests.invoices import support as s
from worker.charges import engine
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.invoices import numbering, pdf
from worker.invoices import service as invoices
from worker.invoices.models import Invoice, Series
from worker.kernel.bank_settings import is_creditor_reference
from worker.kernel.clock import now
from worker.kernel.errors import InvoiceState
from worker.psp.base import ChargeResult, Outcome
from worker.settlement import service as settlement

pytestmark = pytest.mark.integration


def test_account_has_company_finance_email_reference_and_unapplied() -> None:
    account_id = s.account(company="株式会社テスト", finance_email="finance@example.com")
    with unit_of_work() as uow:
        from worker.accounts import service as accounts

        shown = accounts.view(accounts.get(uow.session, account_id))
    assert shown["company"] == "株式会社テスト"
    assert shown["finance_email"] == "finance@example.com"
    assert shown["unapplied"] == "0.00"
    assert is_creditor_reference(shown["bank_reference"])
    assert shown["bank_reference"] != s.reference(s.account())


def test_bank_top_up_makes_an_open_proforma_with_instructions_and_mails_it() -> None:
    account_id = s.account(finance_email="finance@example.com")
    result = s.top_up(account_id, "100.00", s.method(account_id))
    assert result["status"] == "pending"
    invoice = result["invoice"]
    assert invoice["kind"] == "proforma" and invoice["status"] == "open"
    assert invoice["number"] == f"PF-{now().year}-000001"
    assert invoice["amount"] == "100.00" and invoice["currency"] == "EUR"
    instructions = result["payment_instructions"]
    assert instructions["iban"] == "DE89370400440532013000"
    assert instructions["bic"] == "COBADEFFXXX"
    assert instructions["reference"] == s.reference(account_id)
    assert instructions["beneficiary"]
    [mail] = s.mails("invoice.proforma")
    assert mail.recipients == ["finance@example.com"]  # the finance email wins
    assert "DE89370400440532013000" in mail.text_body
    assert mail.attachments and mail.attachments[0]["renderer"] == "invoice_pdf"
    assert [e.data["number"] for e in s.events("invoice.issued")] == [invoice["number"]]
    assert s.get_account(account_id).balance == 0


def test_paypal_gets_a_final_invoice_at_success() -> None:
    account_id = s.account()
    result = s.top_up(
        account_id, "25.00", s.method(account_id, "paypal", "fake-paypal-billing-agreement-nonce")
    )
    assert result["status"] == "succeeded"
    [final] = s.invoices_of(account_id)
    assert final.kind == "final" and final.status == "issued" and final.method == "paypal"
    assert final.number == f"INV-{now().year}-000001"
    [mail] = s.mails("invoice.final")
    assert mail.recipients == ["ops@example.com"]  # no finance email: the alert addresses


def test_card_invoice_is_pending_until_settled_or_72_hours() -> None:
    account_id = s.account()
    card = s.method(account_id, "braintree", "fake-valid-visa-nonce")
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with time_machine.travel(t0, tick=False):
        s.top_up(account_id, "40.00", card)
        [pending] = s.invoices_of(account_id)
        assert pending.status == "pending" and pending.number is None
        assert pending.due_at == t0 + timedelta(seconds=259200)
        with unit_of_work() as uow, pytest.raises(InvoiceState):
            pdf.write(uow.session, pending.id, "/tmp/never.pdf")
    with unit_of_work() as uow:  # 71 h 59 min later, not settled: still pending
        assert invoices.issue_due(uow, t0 + timedelta(hours=71, minutes=59))["issued"] == 0
    with time_machine.travel(t0 + timedelta(hours=72), tick=False), unit_of_work() as uow:
        assert invoices.issue_due(uow, now())["issued"] == 1
    issued = s.invoice(pending.id)
    assert issued.status == "issued" and issued.number == "INV-2026-000001"
    assert issued.issued_at == t0 + timedelta(hours=72)
    with unit_of_work() as uow:  # a second run (or a redelivery) issues nothing more
        assert invoices.issue_due(uow, t0 + timedelta(hours=80))["issued"] == 0
    assert len(s.mails("invoice.final")) == 1


def test_card_invoice_is_issued_once_the_psp_settles_it() -> None:
    account_id = s.account()
    card = s.method(account_id, "braintree", "fake-valid-visa-nonce")
    s.top_up(account_id, "40.00", card)
    [pending] = s.invoices_of(account_id)
    with unit_of_work() as uow:
        charge = uow.session.get(Charge, pending.charge_id)
        assert charge is not None
        settlement.settle(uow, charge, now())
    with unit_of_work() as uow:
        assert invoices.issue_due(uow, now())["issued"] == 1
    assert s.invoice(pending.id).status == "issued"


def test_every_charge_outcome_goes_through_the_hook_whatever_its_purpose() -> None:
    account_id = s.account()
    card = s.method(account_id, "braintree", "fake-valid-visa-nonce")
    with unit_of_work() as uow:
        charge, _ = engine.begin(
            uow,
            account_id=account_id,
            amount="20.00",
            idempotency_key="auto_reload:x:1",
            payment_method_id=card,
            purpose="auto_reload",
            now=now(),
        )
        uow.commit()
        engine.apply(uow, charge.id, ChargeResult(Outcome.SUCCEEDED, "psp-1"), now())
    [pending] = s.invoices_of(account_id)
    assert pending.kind == "final" and pending.method == "card" and pending.amount == Decimal("20")


def test_numbers_are_gap_free_and_unique_under_concurrency() -> None:
    """Eight threads take 30 numbers each, a third of them in transactions that roll back:
    the committed numbers are exactly 1..N (no gap, no duplicate)."""
    year_start = datetime(2027, 6, 1, tzinfo=UTC)
    taken: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(30):
                with unit_of_work() as uow:
                    number = numbering.take(uow.session, Series.FINAL, year_start)
                    if (k + i) % 3 == 0:
                        uow.rollback()
                        continue
                    uow.commit()
                    with lock:
                        taken.append(number)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sequences = sorted(int(n.rsplit("-", 1)[1]) for n in taken)
    assert sequences == list(range(1, len(taken) + 1))
    assert all(n.startswith("INV-2027-") for n in taken)


def test_concurrent_paypal_payments_get_consecutive_final_numbers() -> None:
    ids = [s.account() for _ in range(6)]
    methods = [
        s.method(a, "paypal", f"fake-paypal-billing-agreement-nonce:{i}") for i, a in enumerate(ids)
    ]
    threads = [
        threading.Thread(target=s.top_up, args=(a, "10.00", m))
        for a, m in zip(ids, methods, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with unit_of_work() as uow:
        numbers = sorted(uow.session.scalars(select(Invoice.number).where(Invoice.kind == "final")))
    assert numbers == [f"INV-{now().year}-{i:06d}" for i in range(1, 7)]


def test_the_year_is_the_issue_date_in_invoice_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    from config import reset_settings

    moment = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)  # already 2027 in Tokyo
    assert numbering.year_of(moment) == 2026
    monkeypatch.setenv("INVOICE_TIMEZONE", "Asia/Tokyo")
    reset_settings()
    try:
        assert numbering.year_of(moment) == 2027
    finally:
        monkeypatch.delenv("INVOICE_TIMEZONE")
        reset_settings()


@pytest.mark.parametrize(
    ("locale", "company", "expected"),
    [
        ("ja", "株式会社テスト東京", ["見積請求書", "株式会社テスト東京", "振込参照番号"]),
        ("zh", "北京发票科技有限公司", ["形式发票", "北京发票科技有限公司", "付款参考号"]),
        ("en", "Acme & Sons Ltd", ["Pro-forma invoice", "Acme & Sons Ltd", "Payment reference"]),
    ],
)
def test_pdf_opens_and_its_text_names_the_company(
    tmp_path: Path, locale: str, company: str, expected: list[str]
) -> None:
    account_id = s.account(company=company, locale=locale)
    invoice = s.proforma(account_id, "100.00", s.method(account_id))
    out = tmp_path / "pf.pdf"
    with unit_of_work() as uow:
        written = pdf.write(uow.session, invoice["id"], str(out))
    assert written["bytes"] == out.stat().st_size > 1000
    text = PdfReader(io.BytesIO(out.read_bytes())).pages[0].extract_text()
    for part in [*expected, invoice["number"], "DE89370400440532013000", "100.00"]:
        assert part in text, (part, text)
    assert " ".join(s.reference(account_id)[i : i + 4] for i in range(0, 16, 4)) in text
    with unit_of_work() as uow:  # rendered again: the same document
        assert pdf.render(invoices.get(uow.session, invoice["id"])) == out.read_bytes()


def test_void_fails_the_pending_charge_and_an_open_proforma_only() -> None:
    account_id = s.account()
    invoice = s.proforma(account_id, "30.00", s.method(account_id))
    with unit_of_work() as uow:
        assert invoices.void(uow, invoice["id"], now())["status"] == "void"
    with unit_of_work() as uow:
        charge = uow.session.scalars(select(Charge).where(Charge.account_id == account_id)).one()
        assert charge.status == "failed" and charge.decline_code == "voided"
    with unit_of_work() as uow, pytest.raises(InvoiceState):
        invoices.void(uow, invoice["id"], now())


def test_out_of_band_payment_credits_and_issues_the_final() -> None:
    account_id = s.account()
    invoice = s.proforma(account_id, "50.00", s.method(account_id))
    with unit_of_work() as uow:
        result = invoices.pay_out_of_band(uow, invoice["id"], "cheque 0042", now())
    assert result["invoice"]["status"] == "paid"
    assert result["final_invoice"]["method"] == "out_of_band"
    assert result["final_invoice"]["payment_reference"] == "cheque 0042"
    assert result["balance"] == "50.00"
    [paid] = s.events("invoice.paid")
    assert paid.data["number"] == invoice["number"]
    with unit_of_work() as uow, pytest.raises(InvoiceState):
        invoices.pay_out_of_band(uow, invoice["id"], None, now())
    s.audit_ok()
