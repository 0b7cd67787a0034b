"""Invoice rules: one invoice per payment, made when the payment's outcome is recorded.

Timing by method (seed 001, "請求書の作成" / "生成发票"):

| method        | at creation                       | when the money is received                 |
|---------------|-----------------------------------|--------------------------------------------|
| bank transfer | pro-forma `PF-` `open`, mailed     | pro-forma `paid`, final `INV-` issued       |
|               | with the payment instructions     | and mailed, `invoice.paid`                 |
| PayPal        | -                                 | final issued and mailed at once            |
| WeChat Pay    | - (the QR code is the request)    | final issued and mailed at once when paid  |
| card          | -                                 | final `pending` (no number, no PDF) until   |
|               |                                   | the PSP says it settled (asked hourly), or |
|               |                                   | our settlement made it available; at the   |
|               |                                   | latest                                     |
|               |                                   | CARD_INVOICE_MAX_DELAY after the success   |
|               |                                   | (`issue_due`, the beat job)                |

Auto-reload charges are payments too: the hook sees every charge. The charge engine calls
`on_charge_outcome` (installed by worker/wiring.py) inside the transaction that records
the outcome, so an invoice exists exactly when its payment's state does.
Longer than 400 lines on purpose: an invoice's life (pro-forma, final, pending card,
paid, void) is one state machine over one row, with its numbering, read together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from config import get_settings
from worker.accounts import service as accounts
from worker.charges import engine
from worker.charges.engine import Recorded
from worker.charges.models import Charge
from worker.charges.states import TERMINAL
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.invoices import mails, numbering
from worker.invoices.models import SERIES_OF, Invoice, InvoiceKind, InvoiceStatus
from worker.kernel import bank_settings
from worker.kernel.clock import isoformat
from worker.kernel.errors import InvoiceState, NotFound, ValidationError
from worker.kernel.money import format_amount
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events
from worker.psp.base import ChargeResult, Outcome, ReportsSettlement, Settlement
from worker.psp.errors import TransportError
from worker.psp.registry import get_adapter

log = logging.getLogger(__name__)

BANK_TRANSFER = "bank_transfer"
PAYPAL = "paypal"
CARD = "card"
WECHAT_PAY = "wechat_pay"


def method_of(charge: Charge) -> str:
    """The invoice method of a charge: bank transfer, PayPal, WeChat Pay, or card (every
    other PSP)."""
    if charge.psp == BANK_TRANSFER:
        return BANK_TRANSFER
    if charge.psp in (PAYPAL, WECHAT_PAY):
        return charge.psp
    return CARD


# --- how a pro-forma is being paid (set by the payer around the charge engine's apply) --------


@dataclass(frozen=True)
class Payment:
    method: str  # bank_transfer, out_of_band, unapplied_funds
    reference: str | None


_paying: ContextVar[Payment | None] = ContextVar("invoice_payment", default=None)


@contextmanager
def paying(method: str, reference: str | None) -> Iterator[None]:
    """Tell the hook how the pro-forma being paid in this block was paid."""
    token = _paying.set(Payment(method, reference))
    try:
        yield
    finally:
        _paying.reset(token)


# --- views ----------------------------------------------------------------------------------


def _moment(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def view(invoice: Invoice) -> dict[str, Any]:
    """The shape `balancectl invoices show` prints (CONTRACT.md, "Bank transfers and invoices")."""
    return {
        "id": invoice.id,
        "number": invoice.number,
        "kind": invoice.kind,
        "status": invoice.status,
        "amount": format_amount(invoice.amount, invoice.currency),
        "currency": invoice.currency,
        "account_id": invoice.account_id,
        "charge_id": invoice.charge_id,
        "method": invoice.method,
        "proforma_id": invoice.proforma_id,
        "corrects": invoice.corrects,
        "payment_reference": invoice.payment_reference,
        "company": invoice.customer.get("company"),
        "issued_at": _moment(invoice.issued_at),
        "paid_at": _moment(invoice.paid_at),
        "voided_at": _moment(invoice.voided_at),
        "due_at": _moment(invoice.due_at),
        "created_at": _moment(invoice.created_at),
        "payment_instructions": invoice.instructions,
    }


def short_view(invoice: Invoice) -> dict[str, Any]:
    """`invoice {id, number, kind, status, amount, currency}` as a top-up prints it."""
    return {
        "id": invoice.id,
        "number": invoice.number,
        "kind": invoice.kind,
        "status": invoice.status,
        "amount": format_amount(invoice.amount, invoice.currency),
        "currency": invoice.currency,
    }


def get(session: Session, invoice_id: object) -> Invoice:
    if not isinstance(invoice_id, str) or not invoice_id.strip():
        raise ValidationError("invoice_id", "is required")
    invoice = session.get(Invoice, invoice_id.strip())
    if invoice is None:
        raise NotFound("invoice_id", f"no invoice {invoice_id.strip()[:60]!r}")
    return invoice


def lock(session: Session, invoice_id: str) -> Invoice:
    return session.scalars(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def list_for(session: Session, account_id: str) -> list[dict[str, Any]]:
    """The account's invoices, oldest first."""
    accounts.get(session, account_id)
    rows = session.scalars(
        select(Invoice)
        .where(Invoice.account_id == account_id)
        .order_by(Invoice.created_at, Invoice.id)
    )
    return [view(invoice) for invoice in rows]


def of_charge(session: Session, charge_id: str, kind: InvoiceKind) -> Invoice | None:
    return session.scalars(
        select(Invoice).where(Invoice.charge_id == charge_id, Invoice.kind == kind)
    ).one_or_none()


def charge_extras(session: Session, charge: Charge) -> dict[str, Any]:
    """What a top-up prints beside its charge (installed as a charge view extra): the
    pro-forma (or final) invoice, and for a pro-forma the payment instructions."""
    invoice = of_charge(session, charge.id, InvoiceKind.PROFORMA) or of_charge(
        session, charge.id, InvoiceKind.FINAL
    )
    if invoice is None:
        return {}
    extras: dict[str, Any] = {"invoice": short_view(invoice)}
    if invoice.kind == InvoiceKind.PROFORMA:
        extras["payment_instructions"] = invoice.instructions
    return extras


# --- making invoices --------------------------------------------------------------------------


def payment_instructions(account: Account, currency: str) -> dict[str, Any] | None:
    """Where to send the money: BANK_ACCOUNTS' account for the currency, and the account's
    own reference; None when no bank account takes that currency."""
    bank = bank_settings.bank_accounts(get_settings().bank_accounts_json).get(currency)
    if bank is None or account.bank_reference is None:
        return None
    return {
        "beneficiary": bank.beneficiary,
        "iban": bank.iban,
        "bic": bank.bic,
        "bank_name": bank.bank_name,
        "reference": account.bank_reference,
        "reference_printed": bank_settings.format_creditor_reference(account.bank_reference),
        "currency": currency,
    }


def issuer() -> dict[str, Any]:
    """INVOICE_ISSUER as invoices copy it: `{name, address, vat_id}`."""
    return _issuer()


def _issuer() -> dict[str, Any]:
    issuer = bank_settings.issuer(get_settings().invoice_issuer_json)
    return {"name": issuer.name, "address": issuer.address, "vat_id": issuer.vat_id}


def _customer(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "name": account.name,
        "company": account.company,
        "country": account.country,
        "finance_email": account.finance_email,
        "bank_reference": account.bank_reference,
    }


def _new(
    account: Account,
    *,
    kind: InvoiceKind,
    status: InvoiceStatus,
    amount: Any,
    currency: str,
    method: str,
    charge_id: str | None,
    now: datetime,
    **columns: Any,
) -> Invoice:
    """An unnumbered invoice of `account` (issuer and customer copied as they are now);
    `columns` sets any other column (`proforma_id`, `payment_reference`, `paid_at`, ...)."""
    values: dict[str, Any] = {
        "id": columns.pop("id") if "id" in columns else new_id("inv"),
        "account_id": account.id,
        "charge_id": charge_id,
        "kind": kind,
        "status": status,
        "number": None,
        "amount": amount,
        "currency": currency,
        "method": method,
        "locale": account.locale,
        "issuer": _issuer(),
        "customer": _customer(account),
        "instructions": None,
        "created_at": now,
        "updated_at": now,
    }
    return Invoice(**(values | columns))


def _issue(
    uow: UnitOfWork, account: Account, invoice: Invoice, status: InvoiceStatus, now: datetime
) -> Invoice:
    """Number `invoice` now (`_number`: status, issue date, `invoice.issued`), add it to the
    session and mail it to the account's finance address."""
    _number(uow, invoice, status, now)
    uow.session.add(invoice)
    mails.issued(uow, account, invoice, now)
    return invoice


def _number(uow: UnitOfWork, invoice: Invoice, status: InvoiceStatus, now: datetime) -> None:
    """Give `invoice` its number, status and issue date (in this transaction), and say so.

    The number is taken before the invoice changes: taking it flushes the session, and a
    row is never numbered without its status (a CHECK constraint)."""
    number = numbering.take(uow.session, SERIES_OF[InvoiceKind(invoice.kind)], now)
    invoice.number = number
    invoice.status = status
    invoice.issued_at = now
    invoice.updated_at = now
    events.record(uow, "invoice.issued", invoice.account_id, issued_data(invoice), now)


def issued_data(invoice: Invoice) -> dict[str, Any]:
    """The data of `invoice.issued` (CONTRACT.md)."""
    return {
        "invoice_id": invoice.id,
        "number": invoice.number,
        "kind": invoice.kind,
        "status": invoice.status,
        "amount": format_amount(invoice.amount, invoice.currency),
        "currency": invoice.currency,
        "charge_id": invoice.charge_id,
        "method": invoice.method,
    }


def create_proforma(uow: UnitOfWork, charge: Charge, account: Account, now: datetime) -> Invoice:
    """The pro-forma of a bank-transfer payment (once per charge): numbered, `open`, mailed
    with the payment instructions."""
    existing = of_charge(uow.session, charge.id, InvoiceKind.PROFORMA)
    if existing is not None:
        return existing
    instructions = payment_instructions(account, charge.currency)
    if instructions is None:
        log.error(
            "pro-forma for charge %s: BANK_ACCOUNTS has no %s account; instructions missing",
            charge.id,
            charge.currency,
        )
    invoice = _new(
        account,
        kind=InvoiceKind.PROFORMA,
        status=InvoiceStatus.OPEN,
        amount=charge.amount,
        currency=charge.currency,
        method=BANK_TRANSFER,
        charge_id=charge.id,
        now=now,
        instructions=instructions,
    )
    return _issue(uow, account, invoice, InvoiceStatus.OPEN, now)


def issue_final(
    uow: UnitOfWork,
    account: Account,
    *,
    charge: Charge | None,
    amount: Any,
    currency: str,
    method: str,
    now: datetime,
    pending_until: datetime | None = None,
    proforma: Invoice | None = None,
    reference: str | None = None,
) -> Invoice:
    """The final invoice of a received payment (once per charge): issued now, or `pending`
    without a number until `pending_until` (a card payment) when that is given."""
    if charge is not None:
        existing = of_charge(uow.session, charge.id, InvoiceKind.FINAL)
        if existing is not None:
            return existing
    invoice = _new(
        account,
        kind=InvoiceKind.FINAL,
        status=InvoiceStatus.PENDING if pending_until is not None else InvoiceStatus.ISSUED,
        amount=amount,
        currency=currency,
        method=method,
        charge_id=charge.id if charge is not None else None,
        now=now,
        proforma_id=proforma.id if proforma is not None else None,
        payment_reference=reference,
        paid_at=now,
        due_at=pending_until,
    )
    if pending_until is None:
        return _issue(uow, account, invoice, InvoiceStatus.ISSUED, now)
    uow.session.add(invoice)
    return invoice


def issue_credit_note(
    uow: UnitOfWork,
    account: Account,
    *,
    charge: Charge,
    amount: Any,
    refund_id: str,
    now: datetime,
) -> Invoice:
    """The credit note of a refund (`CN-YYYY-NNNNNN`, gap-free, issued and mailed now),
    naming in `corrects` the final invoice of the refunded charge. A final invoice still
    pending (a card payment not yet settled) is issued first: a credit note must name a
    numbered invoice. Once per refund (`payment_reference` holds the refund id)."""
    existing = uow.session.scalars(
        select(Invoice).where(
            Invoice.kind == InvoiceKind.CREDIT_NOTE, Invoice.payment_reference == refund_id
        )
    ).one_or_none()
    if existing is not None:
        return existing
    final = of_charge(uow.session, charge.id, InvoiceKind.FINAL)
    if final is not None and final.status == InvoiceStatus.PENDING:
        issue_pending(uow, lock(uow.session, final.id), now)
    note = _new(
        account,
        kind=InvoiceKind.CREDIT_NOTE,
        status=InvoiceStatus.ISSUED,
        amount=amount,
        currency=charge.currency,
        method=method_of(charge),
        charge_id=charge.id,
        now=now,
        corrects=final.id if final is not None else None,
        payment_reference=refund_id,
        instructions={
            "refund_id": refund_id,
            "corrects_number": final.number if final is not None else None,
        },
        paid_at=now,
    )
    return _issue(uow, account, note, InvoiceStatus.ISSUED, now)


def final_of_proforma(
    account: Account,
    proforma: Invoice,
    charge: Charge,
    *,
    invoice_id: str,
    number: str,
    method: str,
    reference: str | None,
    now: datetime,
) -> Invoice:
    """The final invoice `issue_final` makes when a pro-forma's charge succeeds, with its
    number already taken (`numbering.take_block`, same transaction) and not yet added to the
    session; the bulk payer (worker/bank/settling.py) writes its event and mail."""
    return _new(
        account,
        kind=InvoiceKind.FINAL,
        status=InvoiceStatus.ISSUED,
        amount=charge.amount,
        currency=charge.currency,
        method=method,
        charge_id=charge.id,
        now=now,
        id=invoice_id,
        proforma_id=proforma.id,
        payment_reference=reference,
        paid_at=now,
        due_at=None,
        number=number,
        issued_at=now,
    )


def issue_pending(uow: UnitOfWork, invoice: Invoice, now: datetime) -> bool:
    """Number and mail a `pending` final invoice (the caller holds its row lock)."""
    if invoice.status != InvoiceStatus.PENDING:
        return False
    _number(uow, invoice, InvoiceStatus.ISSUED, now)
    account = accounts.get(uow.session, invoice.account_id)
    mails.issued(uow, account, invoice, now)
    return True


def _mark_paid(uow: UnitOfWork, proforma: Invoice, final: Invoice, now: datetime) -> None:
    proforma.status = InvoiceStatus.PAID
    proforma.paid_at = now
    proforma.updated_at = now
    events.record(uow, "invoice.paid", proforma.account_id, paid_data(proforma, final), now)


def paid_data(proforma: Invoice, final: Invoice) -> dict[str, Any]:
    """The data of `invoice.paid` (CONTRACT.md)."""
    return {
        "invoice_id": proforma.id,
        "number": proforma.number,
        "amount": format_amount(proforma.amount, proforma.currency),
        "currency": proforma.currency,
        "charge_id": proforma.charge_id,
        "final_invoice_id": final.id,
        "final_number": final.number,
        "method": final.method,
        "payment_reference": final.payment_reference,
    }


def on_charge_outcome(uow: UnitOfWork, charge: Charge, recorded: Recorded) -> None:
    """The charge engine's hook: the invoice each payment gets, by method (table above)."""
    now = recorded.now
    if charge.status == "pending" and method_of(charge) == BANK_TRANSFER:
        account = recorded.locked or accounts.get(uow.session, charge.account_id)
        create_proforma(uow, charge, account, now)
        return
    if recorded.credited is None or charge.status != "succeeded":
        return
    account = recorded.credited
    method = method_of(charge)
    if method == BANK_TRANSFER:
        payment = _paying.get() or Payment(BANK_TRANSFER, charge.psp_reference)
        proforma = of_charge(uow.session, charge.id, InvoiceKind.PROFORMA)
        final = issue_final(
            uow,
            account,
            charge=charge,
            amount=charge.amount,
            currency=charge.currency,
            method=payment.method,
            now=now,
            proforma=proforma,
            reference=payment.reference,
        )
        if proforma is not None and proforma.status == InvoiceStatus.OPEN:
            _mark_paid(uow, proforma, final, now)
        return
    if method in (PAYPAL, WECHAT_PAY):  # paid in full when it succeeds: nothing to wait for
        issue_final(
            uow,
            account,
            charge=charge,
            amount=charge.amount,
            currency=charge.currency,
            method=method,
            now=now,
            reference=charge.psp_reference,
        )
        return
    # A card: no invoice while the payment is pending at the PSP (seed 001: "up to 72 hours").
    delay = timedelta(seconds=get_settings().card_invoice_max_delay_seconds)
    final = issue_final(
        uow,
        account,
        charge=charge,
        amount=charge.amount,
        currency=charge.currency,
        method=CARD,
        now=now,
        pending_until=recorded.succeeded_at + delay,
        reference=charge.psp_reference,
    )
    if charge.settlement_status == "available":  # settled on the spot: nothing to wait for
        issue_pending(uow, final, now)


# --- the beat job ----------------------------------------------------------------------------


def issue_due(uow: UnitOfWork, as_of: datetime, batch_size: int = 200) -> dict[str, Any]:
    """Issue every pending (card) final invoice whose payment has settled, or whose
    CARD_INVOICE_MAX_DELAY has passed by `as_of`; one committed batch at a time.

    Settled means: our own settlement roll-forward made it available, or the PSP says the
    transaction settled (`settlement_status`, for adapters that report it: braintree_gateway,
    paypal_rest), asked for each pending card invoice at most once per
    `SETTLEMENT_CHECK_EVERY` (`_issue_settled_at_psp`). Seeds 000/001: a card invoice can take
    up to 72 hours, while the payment is pending.

    Safe to run twice or concurrently: rows are claimed FOR UPDATE SKIP LOCKED and only a
    `pending` invoice is numbered. Returns `{issued, as_of}`."""
    issued = 0
    while True:
        due = list(
            uow.session.scalars(
                select(Invoice)
                .join(Charge, Charge.id == Invoice.charge_id)
                .where(
                    Invoice.status == InvoiceStatus.PENDING,
                    or_(Invoice.due_at <= as_of, Charge.settlement_status == "available"),
                )
                .order_by(Invoice.due_at, Invoice.id)
                .limit(batch_size)
                .with_for_update(of=Invoice, skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        if not due:
            break
        for invoice in due:
            if issue_pending(uow, invoice, as_of):
                issued += 1
        uow.commit()
        if len(due) < batch_size:
            break
    issued += _issue_settled_at_psp(uow, as_of, batch_size)
    return {"issued": issued, "as_of": isoformat(as_of)}


# How often one pending card invoice's PSP is asked whether the payment settled: Braintree
# settles in a nightly batch, so asking every run (INVOICE_INTERVAL, 15 min) would cost a
# PSP call per invoice per run for up to 72 hours and learn nothing more.
SETTLEMENT_CHECK_EVERY = timedelta(hours=1)


def _issue_settled_at_psp(uow: UnitOfWork, as_of: datetime, batch_size: int) -> int:
    """Ask the PSP of pending card invoices (not asked in the last SETTLEMENT_CHECK_EVERY)
    whether their payment settled, and issue those it says are; the rest wait (at the
    latest until their `due_at`). The PSP is asked with no transaction open and no lock held;
    each answer is applied under the invoice's row lock, in its own transaction. A PSP that
    cannot be asked, or is no longer enabled, is asked again next time."""
    candidates = uow.session.execute(
        select(Invoice.id, Charge.psp, Charge.psp_reference)
        .join(Charge, Charge.id == Invoice.charge_id)
        .where(
            Invoice.status == InvoiceStatus.PENDING,
            Invoice.method == CARD,
            Invoice.due_at > as_of,
            Charge.psp_reference.is_not(None),
            or_(
                Invoice.settlement_checked_at.is_(None),
                Invoice.settlement_checked_at <= as_of - SETTLEMENT_CHECK_EVERY,
            ),
        )
        .order_by(Invoice.due_at, Invoice.id)
        .limit(batch_size)
    ).all()
    uow.commit()  # no connection is held while a PSP is asked
    issued = 0
    for invoice_id, psp, reference in candidates:
        if reference is None:  # excluded by the query; for the type checker
            continue
        try:
            adapter = get_adapter(psp)
        except ValidationError:  # the PSP was taken out of PSP_ENABLED: the bound will do
            continue
        if not isinstance(adapter, ReportsSettlement):
            continue  # a stub or a PSP that cannot say: the 72 h bound issues it
        try:
            status = adapter.settlement_status(reference)
        except TransportError as exc:
            log.warning("invoice %s: %s settlement not known now: %s", invoice_id, psp, exc)
            continue
        invoice = lock(uow.session, invoice_id)
        if invoice.status == InvoiceStatus.PENDING:
            invoice.settlement_checked_at = as_of
            if status.state is Settlement.SETTLED and issue_pending(uow, invoice, as_of):
                issued += 1
            elif status.state is Settlement.FAILED:
                log.warning(
                    "invoice %s: %s says the payment %s did not settle (%s)",
                    invoice_id,
                    psp,
                    reference,
                    status.psp_status,
                )
        uow.commit()
    return issued


# --- operators: pay out of band, void --------------------------------------------------------


def open_proforma(session: Session, invoice_id: object) -> tuple[Account, Invoice]:
    """The account (locked first: the order every payer takes) and the open pro-forma
    (locked). Raises InvoiceState when it is not an open pro-forma."""
    found = get(session, invoice_id)
    account = ledger.lock_account(session, found.account_id)
    invoice = lock(session, found.id)
    if invoice.kind != InvoiceKind.PROFORMA or invoice.status != InvoiceStatus.OPEN:
        raise InvoiceState(
            "invoice_id",
            f"{invoice.number or invoice.id} is a {invoice.kind} that is {invoice.status}: "
            "only an open pro-forma can be paid or voided",
        )
    return account, invoice


def pay_proforma(
    uow: UnitOfWork, invoice: Invoice, *, method: str, reference: str | None, now: datetime
) -> Invoice:
    """The money of an open pro-forma arrived: its charge succeeds through the charge engine
    (balance credited, a depleted account reactivated, the hooks run), the pro-forma is
    `paid` and the final invoice issued, in the caller's transaction. Returns the final.

    The caller holds the account and invoice locks (`open_proforma`)."""
    assert invoice.charge_id is not None
    result = ChargeResult(Outcome.SUCCEEDED, (reference or invoice.number or "")[:120] or None)
    with paying(method, reference):
        charge = engine.apply(uow, invoice.charge_id, result, now)
    final = of_charge(uow.session, charge.id, InvoiceKind.FINAL)
    if charge.status != "succeeded" or final is None:
        raise InvoiceState(
            "invoice_id", f"the payment of {invoice.number} is {charge.status}: cannot be paid"
        )
    return final


def pay_out_of_band(
    uow: UnitOfWork, invoice_id: object, reference: object, now: datetime
) -> dict[str, Any]:
    """`invoices pay ID --out-of-band [--reference R]` (a cheque: seed 002's paid_out_of_band)."""
    ref = None
    if reference is not None:
        from worker.kernel import validation

        ref = validation.reference(reference, "reference")
    account, invoice = open_proforma(uow.session, invoice_id)
    final = pay_proforma(uow, invoice, method="out_of_band", reference=ref, now=now)
    return {
        "invoice": view(invoice),
        "final_invoice": view(final),
        "charge_id": invoice.charge_id,
        "balance": format_amount(account.balance, account.currency),
    }


def void(uow: UnitOfWork, invoice_id: object, now: datetime) -> dict[str, Any]:
    """`invoices void ID`: an open pro-forma is voided and its pending charge fails."""
    _account, invoice = open_proforma(uow.session, invoice_id)
    invoice.status = InvoiceStatus.VOID
    invoice.voided_at = now
    invoice.updated_at = now
    if invoice.charge_id is not None:
        charge = engine.lock(uow.session, invoice.charge_id)
        if charge.status not in TERMINAL:
            engine.fail(uow, charge, "voided", f"pro-forma {invoice.number} voided", now)
    events.record(
        uow,
        "invoice.voided",
        invoice.account_id,
        {"invoice_id": invoice.id, "number": invoice.number, "charge_id": invoice.charge_id},
        now,
    )
    return view(invoice)
