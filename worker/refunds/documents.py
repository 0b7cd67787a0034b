"""What a refund writes besides money: the credit note, the mail asking a bank-transfer
customer where to send the refund, and the operator's warning when a refund takes a PSP's
available funds below zero."""

from __future__ import annotations

import logging
from datetime import datetime

from worker.charges.models import Charge
from worker.db.session import UnitOfWork
from worker.invoices import mails as invoice_mails
from worker.invoices import service as invoices
from worker.kernel import clock
from worker.kernel.money import format_amount
from worker.ledger.models import Account
from worker.outbox import events, mail
from worker.outbox import templates as mail_templates
from worker.refunds.models import Refund
from worker.settlement import paid_out

log = logging.getLogger(__name__)


def credit_note(
    uow: UnitOfWork, account: Account, charge: Charge, refund: Refund, now: datetime
) -> str:
    """Issue (once) the refund's credit note, naming the charge's invoice; its id."""
    note = invoices.issue_credit_note(
        uow, account, charge=charge, amount=refund.amount, refund_id=refund.id, now=now
    )
    return note.id


def requires_details(uow: UnitOfWork, account: Account, refund: Refund, now: datetime) -> None:
    """A bank-transfer refund waits for the account to pay it to: `refund.requires_details`
    and a mail in the account's locale (en/ja/zh) asking for the IBAN and holder."""
    events.record(
        uow,
        "refund.requires_details",
        refund.account_id,
        {
            "refund_id": refund.id,
            "charge_id": refund.charge_id,
            "amount": format_amount(refund.amount, refund.currency),
            "currency": refund.currency,
        },
        now,
    )
    _details_mail(uow, account, refund, "refund_details", "refund.requires_details", now)


def details_reminder(
    uow: UnitOfWork, account: Account, refund: Refund, expires_at: datetime, now: datetime
) -> None:
    """The one reminder for a refund still waiting for details (the refunds janitor, after
    REFUND_DETAILS_REMINDER_DAYS): `refund.details_reminder` and a mail in the account's
    locale saying by when (`expires_at`) the details must come; once per refund (the mail's
    dedupe key)."""
    events.record(
        uow,
        "refund.details_reminder",
        refund.account_id,
        {
            "refund_id": refund.id,
            "charge_id": refund.charge_id,
            "amount": format_amount(refund.amount, refund.currency),
            "currency": refund.currency,
            "expires_at": clock.isoformat(expires_at),
        },
        now,
    )
    _details_mail(
        uow,
        account,
        refund,
        "refund_details_reminder",
        "refund.details_reminder",
        now,
        expires_at=expires_at,
    )


def _details_mail(
    uow: UnitOfWork,
    account: Account,
    refund: Refund,
    template: str,
    kind: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> None:
    locale = mail_templates.resolve_locale(account.locale)
    fields = {
        "customer": mail_templates.one_line(account.company or account.name),
        "account_id": account.id,
        "amount": mail_templates.format_money(refund.amount, refund.currency, locale),
        "refund_id": refund.id,
        "issuer": mail_templates.one_line(str(invoices.issuer().get("name", ""))),
        "expires_on": "" if expires_at is None else expires_at.date().isoformat(),
    }
    env = mail_templates.environment()
    subject = env.get_template(f"{locale}/{template}.subject.txt.j2").render(fields)
    text = env.get_template(f"{locale}/{template}.txt.j2").render(fields)
    mail.queue(
        uow,
        dedupe_key=f"{kind}:{refund.id}",
        kind=kind,
        subject=mail_templates.one_line(subject),
        text_body=text,
        recipients=invoice_mails.recipients(account),
        account_id=account.id,
        now=min(now, clock.now()),
    )


def after_paid_out(uow: UnitOfWork, refund: Refund, now: datetime) -> None:
    """Issue 14: a refund larger than what is available at its PSP is allowed, but an
    operator must see it: `settlement.negative` when the PSP's available funds (after
    refunds) are below zero once it is paid."""
    available = paid_out.available_at(uow.session, refund.psp, refund.currency, now)
    if available >= 0:
        return
    events.record(
        uow,
        "settlement.negative",
        None,
        {
            "psp": refund.psp,
            "currency": refund.currency,
            "available": format_amount(available, refund.currency),
            "refund_id": refund.id,
            "account_id": refund.account_id,
            "amount": format_amount(refund.amount, refund.currency),
        },
        now,
    )
    log.info(  # the event is the operator's signal; a CLI refund prints nothing extra
        "refund %s took %s %s funds below zero (%s)",
        refund.id,
        refund.psp,
        refund.currency,
        format_amount(available, refund.currency),
    )
