"""Invoice mails: the pro-forma with payment instructions, the final invoice with its PDF,
and "still due" after an underpayment beyond the tolerance.

Sent to the account's finance email when set, else to its invoice-and-alert addresses
(seed 001: "財務用メールアドレス" / "财务电子邮件地址"), in the account's locale (en/ja/zh,
worker/templates/mail/<locale>/invoice_*.j2). Queued in the mail outbox in the transaction
that issues the invoice; the PDF is attached when the mail is sent (rendered then from
the stored, never-changing invoice: worker/invoices/pdf.py).
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.db.session import UnitOfWork
from worker.invoices.models import Invoice, InvoiceKind
from worker.kernel import clock
from worker.ledger.models import Account
from worker.outbox import mail
from worker.outbox import templates as mail_templates

log = logging.getLogger(__name__)

PDF_RENDERER = "invoice_pdf"
_METHOD_NAMES = {
    "en": {
        "bank_transfer": "bank transfer",
        "out_of_band": "paid outside our payment services",
        "unapplied_funds": "bank transfer (funds held for you)",
        "paypal": "PayPal",
        "wechat_pay": "WeChat Pay",
        "card": "card",
    },
    "ja": {
        "bank_transfer": "銀行振込",
        "out_of_band": "その他の方法",
        "unapplied_funds": "銀行振込（お預かり金）",
        "paypal": "PayPal",
        "wechat_pay": "WeChat Pay",
        "card": "クレジットカード",
    },
    "zh": {
        "bank_transfer": "银行转账",
        "out_of_band": "其他方式",
        "unapplied_funds": "银行转账（代为保管的款项）",
        "paypal": "PayPal",
        "wechat_pay": "微信支付",
        "card": "信用卡",
    },
}


def recipients(account: Account) -> list[str]:
    """The finance email when set, else the invoice-and-alert addresses."""
    return [account.finance_email] if account.finance_email else list(account.emails)


def customer_name(customer: dict[str, Any]) -> str:
    """The company when set (invoices are made out to it), else the account name."""
    return mail_templates.one_line(str(customer.get("company") or customer.get("name") or ""))


def method_name(method: str, locale: str) -> str:
    return _METHOD_NAMES[mail_templates.resolve_locale(locale)].get(method, method)


def _render(locale: str, kind: str, fields: dict[str, Any]) -> tuple[str, str]:
    code = mail_templates.resolve_locale(locale)
    env = mail_templates.environment()
    subject = env.get_template(f"{code}/{kind}.subject.txt.j2").render(fields)
    text = env.get_template(f"{code}/{kind}.txt.j2").render(fields)
    return mail_templates.one_line(subject), text


def _fields(invoice: Invoice) -> dict[str, Any]:
    locale = invoice.locale
    moment = invoice.issued_at or invoice.created_at
    return {
        "customer": customer_name(invoice.customer),
        "account_id": invoice.account_id,
        "number": invoice.number,
        "amount": mail_templates.format_money(invoice.amount, invoice.currency, locale),
        "currency": invoice.currency,
        "issued_on": moment.date().isoformat(),
        "issuer": mail_templates.one_line(str(invoice.issuer.get("name", ""))),
        "instructions": invoice.instructions,
        "method": method_name(invoice.method, locale),
        "corrects": (invoice.instructions or {}).get("corrects_number") or invoice.corrects,
    }


def _outbox_time(moment: datetime) -> datetime:
    """A job replayed `as_of` a later moment must not hold its mail back until then."""
    return min(moment, clock.now())


def issued(uow: UnitOfWork, account: Account, invoice: Invoice, now: datetime) -> None:
    """Mail a pro-forma (instructions) or a final invoice (PDF attached), once per invoice."""
    mail.queue(uow, **issued_mail(account, invoice, now))


def issued_many(uow: UnitOfWork, items: list[tuple[Account, Invoice]], now: datetime) -> None:
    """`issued` for many invoices in one statement (a statement import's chunk)."""
    mail.queue_many(uow, [issued_mail(account, invoice, now) for account, invoice in items])


def issued_mail(account: Account, invoice: Invoice, now: datetime) -> dict[str, Any]:
    """The keyword arguments of `mail.queue` for an invoice's mail (`issued`)."""
    kind = {
        InvoiceKind.PROFORMA: "invoice_proforma",
        InvoiceKind.CREDIT_NOTE: "invoice_credit_note",
    }.get(InvoiceKind(invoice.kind), "invoice_final")
    try:
        subject, text = _render(invoice.locale, kind, _fields(invoice))
    except Exception:  # a template bug must never roll back the payment it reports
        log.exception("invoice %s: mail template failed, sending the fallback", invoice.id)
        subject = f"Invoice {invoice.number}"
        text = f"Invoice {invoice.number}: {invoice.amount} {invoice.currency}.\n"
    return {
        "dedupe_key": f"invoice.issued:{invoice.id}",
        "kind": f"invoice.{invoice.kind}",
        "subject": subject,
        "text_body": text,
        "recipients": recipients(account),
        "account_id": account.id,
        "attachments": [
            {"renderer": PDF_RENDERER, "ref": invoice.id, "filename": f"{invoice.number}.pdf"}
        ],
        "now": _outbox_time(now),
    }


def still_due(
    uow: UnitOfWork,
    account: Account,
    invoice: Invoice,
    *,
    received: Decimal,
    still: Decimal,
    transfer_id: str,
    now: datetime,
) -> None:
    """An underpayment beyond the tolerance: the money waits as unapplied funds and the
    customer is told what is still due (seed 002, "支払い不足"). Once per transfer."""
    fields = {
        **_fields(invoice),
        "received": mail_templates.format_money(received, invoice.currency, invoice.locale),
        "still_due": mail_templates.format_money(still, invoice.currency, invoice.locale),
        "reference": (invoice.instructions or {}).get("reference_printed")
        or account.bank_reference,
    }
    subject, text = _render(invoice.locale, "invoice_still_due", fields)
    mail.queue(
        uow,
        dedupe_key=f"invoice.still_due:{transfer_id}",
        kind="invoice.still_due",
        subject=subject,
        text_body=text,
        recipients=recipients(account),
        account_id=account.id,
        now=_outbox_time(now),
    )
