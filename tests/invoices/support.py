"""Helpers the invoice and bank tests share: accounts, bank-transfer top-ups, reads."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from worker.accounts import service as accounts
from worker.bank import service as bank
from worker.charges import top_up as top_ups
from worker.db.session import unit_of_work
from worker.invoices.models import Invoice
from worker.kernel.bank_settings import is_creditor_reference
from worker.kernel.clock import now
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox.models import Event, Mail
from worker.payment_methods import service as payment_methods


def account(
    *,
    company: str | None = "Acme Ltd",
    currency: str = "EUR",
    locale: str = "en",
    finance_email: str | None = None,
    emails: list[str] | None = None,
) -> str:
    with unit_of_work() as uow:
        return str(
            accounts.create(
                uow,
                name="Invoices test",
                currency=currency,
                locale=locale,
                company=company,
                finance_email=finance_email,
                emails=emails if emails is not None else ["ops@example.com"],
                now=now(),
            )["id"]
        )


def method(account_id: str, psp: str = "bank_transfer", nonce: str | None = None) -> str:
    with unit_of_work() as uow:
        return str(
            payment_methods.add(uow, account_id=account_id, psp=psp, nonce=nonce, now=now())["id"]
        )


def top_up(account_id: str, amount: str, method_id: str, key: str | None = None) -> dict[str, Any]:
    with unit_of_work() as uow:
        return top_ups.top_up(
            uow,
            account_id=account_id,
            amount=amount,
            idempotency_key=key or f"t-{uuid.uuid4().hex}",
            payment_method_id=method_id,
        )


def proforma(account_id: str, amount: str, method_id: str) -> dict[str, Any]:
    """A bank-transfer top-up; returns its pro-forma (short view)."""
    result = top_up(account_id, amount, method_id)
    assert result["status"] == "pending", result
    return dict(result["invoice"])


def receive(
    amount: str, memo: str | None, ref: str | None = None, currency: str = "EUR"
) -> dict[str, Any]:
    with unit_of_work() as uow:
        return bank.receive_one(
            uow,
            source="test",
            now=now(),
            amount=amount,
            currency=currency,
            bank_reference=ref or f"BANK-{uuid.uuid4().hex[:12]}",
            memo=memo,
        )


def get_account(account_id: str) -> Account:
    with unit_of_work() as uow:
        found = uow.session.get(Account, account_id)
        assert found is not None
        return found


def reference(account_id: str) -> str:
    ref = get_account(account_id).bank_reference
    assert ref is not None
    return ref


def typo(ref: str) -> str:
    """`ref` with its last character mistyped so that the check digits catch it: about 1 in
    97 single-character changes still checks (a letter is two digits in ISO 11649's mod 97),
    and a test taking the first change at random was flaky."""
    return next(
        mistyped
        for mistyped in (ref[:-1] + c for c in "0123456789ABCDEFGH")
        if mistyped != ref and not is_creditor_reference(mistyped)
    )


def invoice(invoice_id: str) -> Invoice:
    with unit_of_work() as uow:
        found = uow.session.get(Invoice, invoice_id)
        assert found is not None
        return found


def invoices_of(account_id: str) -> list[Invoice]:
    with unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(Invoice)
                .where(Invoice.account_id == account_id)
                .order_by(Invoice.created_at, Invoice.id)
            )
        )


def events(type_: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(uow.session.scalars(select(Event).where(Event.type == type_)))


def mails(kind: str) -> list[Mail]:
    with unit_of_work() as uow:
        return list(uow.session.scalars(select(Mail).where(Mail.kind == kind)))


def count(model: Any, *where: Any) -> int:
    with unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def audit_ok() -> None:
    """The whole book balances, every cached balance and unapplied fund agrees."""
    with unit_of_work() as uow:
        report = ledger.audit(uow.session)
        assert report["ok"], report
        assert bank.audit_unapplied(uow.session) == []


def system_balance(name: str, currency: str = "EUR") -> Decimal:
    from worker.ledger.models import LedgerAccount, Posting

    with unit_of_work() as uow:
        value = uow.session.scalar(
            select(func.coalesce(func.sum(Posting.amount), 0))
            .join(LedgerAccount, LedgerAccount.id == Posting.ledger_account_id)
            .where(LedgerAccount.code == f"{name}:{currency}")
        )
        return Decimal(value or 0)
