"""Incoming transfers matched to invoices by seed 002's rules, against real PostgreSQL."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from tests.invoices import support as s
from worker.bank import service as bank
from worker.bank.models import BankTransfer
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import CurrencyMismatch, IdempotencyConflict, ValidationError

pytestmark = pytest.mark.integration


def _setup(*amounts: str, company: str = "Acme Ltd") -> tuple[str, list[dict[str, str]]]:
    account_id = s.account(company=company)
    method = s.method(account_id)
    return account_id, [s.proforma(account_id, a, method) for a in amounts]


def _statuses(account_id: str) -> dict[str, str]:
    return {i.number or i.id: i.status for i in s.invoices_of(account_id) if i.kind == "proforma"}


def test_memo_invoice_number_pays_that_invoice_and_issues_the_final() -> None:
    account_id, (first, second) = _setup("100.00", "100.00")
    result = s.receive("100.00", f"payment {second['number'].lower().replace('-', ' ')}")
    assert result["status"] == "matched" and result["account_id"] == account_id
    assert [a["number"] for a in result["applied"]] == [second["number"]]
    assert _statuses(account_id) == {first["number"]: "open", second["number"]: "paid"}
    acc = s.get_account(account_id)
    assert acc.balance == Decimal("100") and acc.unapplied == 0
    finals = [i for i in s.invoices_of(account_id) if i.kind == "final"]
    assert [f.proforma_id for f in finals] == [second["id"]]
    assert finals[0].number and finals[0].number.startswith("INV-")
    assert [e.data["number"] for e in s.events("invoice.paid")] == [second["number"]]
    assert len(s.mails("invoice.final")) == 1
    s.audit_ok()


def test_reference_and_same_amount_pays_the_oldest_of_that_amount() -> None:
    account_id, (a50, b100, c100) = _setup("50.00", "100.00", "100.00")
    result = s.receive("100.00", s.reference(account_id))
    assert [x["invoice_id"] for x in result["applied"]] == [b100["id"]]
    assert _statuses(account_id)[c100["number"]] == "open"
    assert _statuses(account_id)[a50["number"]] == "open"
    s.audit_ok()


def test_no_same_amount_spreads_oldest_first_as_far_as_the_money_goes() -> None:
    account_id, (a30, b50, c40) = _setup("30.00", "50.00", "40.00")
    result = s.receive("75.00", f"RF: {s.reference(account_id)}")
    # 30 (oldest) is paid, 50 no longer fits in 45, 40 fits: 5 stays unapplied.
    assert [x["number"] for x in result["applied"]] == [a30["number"], c40["number"]]
    assert result["status"] == "partial" and result["unapplied"] == "5.00"
    assert _statuses(account_id)[b50["number"]] == "open"
    assert s.get_account(account_id).balance == Decimal("70")
    s.audit_ok()


def test_overpayment_leaves_unapplied_funds_that_pay_the_next_proforma_at_once() -> None:
    account_id, (_a100,) = _setup("100.00")
    result = s.receive("130.00", s.reference(account_id))
    assert result["status"] == "partial" and result["unapplied"] == "30.00"
    method = s.method(account_id)
    topped = s.top_up(account_id, "30.00", method)  # covered by the unapplied funds
    assert topped["status"] == "succeeded" and topped["invoice"]["status"] == "paid"
    acc = s.get_account(account_id)
    assert acc.unapplied == 0 and acc.balance == Decimal("130")
    topped = s.top_up(account_id, "20.00", method)  # nothing left: waits for money
    assert topped["status"] == "pending"
    s.audit_ok()


def test_underpayment_within_tolerance_pays_and_books_the_bank_fee() -> None:
    account_id, (_a100,) = _setup("100.00")
    result = s.receive("80.00", s.reference(account_id))  # seed 002: the bank kept 20
    assert result["status"] == "matched"
    assert result["applied"][0]["amount"] == "80.00" and result["applied"][0]["fee"] == "20.00"
    acc = s.get_account(account_id)
    assert acc.balance == Decimal("100") and acc.unapplied == 0
    assert s.system_balance(bank.BANK_FEES) == Decimal("-20")
    s.audit_ok()


def test_underpayment_beyond_tolerance_waits_and_mails_what_is_still_due() -> None:
    account_id, (a100,) = _setup("100.00")
    result = s.receive("70.00", s.reference(account_id))
    assert result["status"] == "unapplied" and result["unapplied"] == "70.00"
    assert _statuses(account_id)[a100["number"]] == "open"
    [mail] = s.mails("invoice.still_due")
    assert "30.00" in mail.text_body and a100["number"] in mail.text_body
    second = s.receive("30.00", s.reference(account_id))  # the rest: now it is covered
    assert second["status"] == "matched"
    assert _statuses(account_id)[a100["number"]] == "paid"
    assert s.get_account(account_id).balance == Decimal("100")
    s.audit_ok()


def test_unmatched_goes_to_suspense_then_assigned_is_matched() -> None:
    account_id, (a60,) = _setup("60.00")
    result = s.receive("60.00", "for my account, thanks")
    assert result["status"] == "unmatched" and result["reason"] == "no_reference"
    assert s.system_balance(bank.SUSPENSE) == Decimal("60")
    [event] = s.events("bank_transfer.unmatched")
    assert event.data["transfer_id"] == result["transfer_id"]
    with unit_of_work() as uow:
        assert [t["transfer_id"] for t in bank.unmatched(uow.session)] == [result["transfer_id"]]
    with unit_of_work() as uow:
        assigned = bank.assign(uow, result["transfer_id"], account_id, now())
    assert assigned["status"] == "matched" and assigned["applied"][0]["invoice_id"] == a60["id"]
    assert s.system_balance(bank.SUSPENSE) == 0
    with unit_of_work() as uow:
        assert bank.unmatched(uow.session) == []
        with pytest.raises(Exception, match="not unmatched"):
            bank.assign(uow, result["transfer_id"], account_id, now())
    s.audit_ok()


def test_a_mistyped_reference_fails_its_check_digits_and_matches_nobody() -> None:
    account_id, (_a100,) = _setup("100.00")
    ref = s.reference(account_id)
    other = s.account()  # whoever might own a look-alike
    result = s.receive("100.00", s.typo(ref))
    assert result["status"] == "unmatched" and result["reason"] == "invalid_reference"
    assert s.get_account(account_id).unapplied == 0 and s.get_account(other).unapplied == 0


def test_the_same_bank_reference_twice_moves_money_once() -> None:
    account_id, (_a100,) = _setup("100.00")
    first = s.receive("100.00", s.reference(account_id), ref="STMT-1")
    again = s.receive("100.00", s.reference(account_id), ref="STMT-1")
    assert again["duplicate"] is True and again["transfer_id"] == first["transfer_id"]
    assert again["status"] == first["status"] == "matched"
    assert s.get_account(account_id).balance == Decimal("100")
    with pytest.raises(IdempotencyConflict):
        s.receive("99.00", s.reference(account_id), ref="STMT-1")
    s.audit_ok()


def test_concurrent_copies_of_one_transfer_move_money_once() -> None:
    account_id, _ = _setup("100.00")
    results: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(s.receive("100.00", s.reference(account_id), ref="SAME-REF"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(bool(r["duplicate"]) for r in results) == [False] + [True] * 5
    assert s.get_account(account_id).balance == Decimal("100")
    assert s.count(BankTransfer) == 1
    s.audit_ok()


def test_currency_mismatch_goes_to_suspense_and_cannot_be_assigned_across() -> None:
    account_id, _ = _setup("100.00")
    result = s.receive("100.00", s.reference(account_id), currency="USD")
    assert result["status"] == "unmatched" and result["reason"] == "currency_mismatch"
    assert s.get_account(account_id).unapplied == 0
    with unit_of_work() as uow, pytest.raises(CurrencyMismatch):
        bank.assign(uow, result["transfer_id"], account_id, now())
    s.audit_ok()


def test_credit_moves_unapplied_funds_to_the_balance_with_an_invoice() -> None:
    account_id = s.account()
    s.receive("42.00", s.reference(account_id))
    with unit_of_work() as uow:
        out = bank.credit(uow, account_id, "12.00", now())
    assert out["unapplied"] == "30.00" and out["balance"] == "12.00"
    assert out["invoice"]["kind"] == "final" and out["invoice"]["status"] == "issued"
    with unit_of_work() as uow:
        assert bank.credit(uow, account_id, None, now())["balance"] == "42.00"
    with unit_of_work() as uow, pytest.raises(Exception, match="unapplied funds"):
        bank.credit(uow, account_id, None, now())
    s.audit_ok()


def test_a_depleted_account_is_reactivated_by_a_paid_invoice() -> None:
    account_id, (a20,) = _setup("20.00")
    from worker.usage import service as usage

    s.receive("1.00", f"{s.reference(account_id)} a first euro")  # not the invoice's amount
    with unit_of_work() as uow:
        bank.credit(uow, account_id, None, now())
    with unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount="1.00", reference="u1", now=now())
    assert s.get_account(account_id).status == "suspended"
    s.receive("20.00", a20["number"])
    acc = s.get_account(account_id)
    assert acc.status == "active" and acc.balance == Decimal("20")
    s.audit_ok()


def test_bad_input_names_the_field_and_writes_nothing() -> None:
    for fields, field in [
        ({"amount": "-5", "currency": "EUR", "bank_reference": "R1"}, "amount"),
        ({"amount": "5.001", "currency": "EUR", "bank_reference": "R1"}, "amount"),
        ({"amount": "5", "currency": "EURO", "bank_reference": "R1"}, "currency"),
        ({"amount": "5", "currency": "EUR", "bank_reference": "R\n1"}, "bank_reference"),
        (
            {"amount": "5", "currency": "EUR", "bank_reference": "R1", "value_date": "x"},
            "value_date",
        ),
    ]:
        with pytest.raises(ValidationError) as caught:
            bank.check(**fields)
        assert caught.value.field == field
    assert s.count(BankTransfer) == 0


def test_a_card_number_in_the_memo_is_redacted() -> None:
    result = s.receive("5.00", "card 4111 1111 1111 1111 thanks")
    with unit_of_work() as uow:
        transfer = uow.session.get(BankTransfer, result["transfer_id"])
        assert transfer is not None and "4111 1111 1111 1111" not in (transfer.memo or "")
