"""Paying many pro-formas from unapplied funds at once (a statement import's chunk).

`booking.pay` pays one pro-forma through the charge engine: its charge succeeds (customer
credited: `ledger.post`), the engine's hooks run (settlement dates it and, a bank transfer
being available on receipt, settles it; auto-reload's policy clears its back-off; the
invoices hook issues and mails the final invoice and marks the pro-forma paid), then the
money leaves the unapplied funds (`bank_apply`). About thirty statements per invoice.

`BulkPayer.pay` takes the same arguments and decides the same (the pro-forma is paid, the
funds leave at once, in memory, so the rules in worker/bank/matching.py see exactly what
they would have seen); `flush` then writes what the engine and its hooks would have, for
all of the chunk's payments, in a fixed number of statements: the final invoices' numbers
as one block of the gap-free series (same transaction), the credits (`ledger.credit_many`),
the settlement and `bank_apply` legs (`post_legs_many`), events and mails in bulk.

Only the case that is exactly that is taken in bulk: an active account with no virtual
numbers' fees (the numbers hook would act), and every open pro-forma of it a pending
bank-transfer top-up with no final invoice and no settlement yet, its settlement date
computable, and no outcome hook installed beyond the four known ones. Any other account
is paid through the engine (`booking.pay`), as `receive` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from worker.bank.booking import BANK_FEES, BANK_IN, Applied, unapplied_code
from worker.charges import engine
from worker.charges.models import Charge
from worker.charges.states import ALLOWED, Purpose
from worker.db.base import new_id
from worker.db.bulk import among
from worker.db.session import UnitOfWork
from worker.invoices import mails as invoice_mails
from worker.invoices import numbering
from worker.invoices import service as invoices
from worker.invoices.models import Invoice, InvoiceKind, InvoiceStatus, Series
from worker.kernel.money import format_amount
from worker.ledger.legs import Credit, Legs, credit_many, post_legs_many
from worker.ledger.models import Account
from worker.outbox import events
from worker.settlement import service as settlement

# The outcome hooks whose effect on a bank-transfer success `flush` writes itself.
_KNOWN_HOOKS = frozenset({"settlement", "auto_reload", "invoices", "bank"})


@dataclass
class _Payment:
    account: Account
    proforma: Invoice
    charge: Charge
    used: Decimal
    fee: Decimal
    reference: str
    method: str
    final_id: str


class BulkPayer:
    """The chunk's payer for the accounts it can take (`takes`); see the module doc."""

    def __init__(
        self,
        uow: UnitOfWork,
        locked: dict[str, Account],
        open_by: dict[str, list[Invoice]],
        now: datetime,
    ) -> None:
        self.now = now
        self._accounts: set[str] = set()
        self._charges: dict[str, Charge] = {}
        self._plans: dict[str, tuple[date, str, datetime]] = {}
        self._payments: list[_Payment] = []
        if not set(engine.installed_hooks()) <= _KNOWN_HOOKS:
            return
        charge_ids = sorted(
            inv.charge_id for invs in open_by.values() for inv in invs if inv.charge_id
        )
        if not charge_ids:
            return
        session = uow.session
        charges = {
            c.id: c
            for c in session.scalars(
                select(Charge)
                .where(among(session, Charge.id, charge_ids))
                .order_by(Charge.id)
                .with_for_update()
            )
        }
        with_final = set(
            session.scalars(
                select(Invoice.charge_id).where(
                    among(session, Invoice.charge_id, charge_ids), Invoice.kind == InvoiceKind.FINAL
                )
            )
        )
        for account_id, pending in open_by.items():
            account = locked[account_id]
            if account.status != "active" or account.next_fee_at is not None:
                continue
            plans: dict[str, tuple[date, str, datetime]] = {}
            for invoice in pending:
                charge = charges.get(invoice.charge_id or "")
                if (
                    charge is None
                    or invoice.kind != InvoiceKind.PROFORMA
                    or charge.account_id != account_id
                    or charge.status != "pending"
                    or "succeeded" not in ALLOWED.get(charge.status, frozenset())
                    or charge.psp != invoices.BANK_TRANSFER
                    or charge.purpose == Purpose.AUTO_RELOAD
                    or charge.settlement_status is not None
                    or charge.id in with_final
                ):
                    break
                try:
                    plans[charge.id] = settlement.plan(charge, account.country, now)
                except Exception:  # the engine's path reports it (settlement.unscheduled)
                    break
            else:
                self._accounts.add(account_id)
                self._plans.update(plans)
                for invoice in pending:
                    self._charges[invoice.id] = charges[invoice.charge_id or ""]

    def takes(self, account: Account) -> bool:
        """Whether this account's payments are written in bulk (else `booking.pay`)."""
        return account.id in self._accounts

    def pay(
        self,
        uow: UnitOfWork,
        account: Account,
        invoice: Invoice,
        *,
        used: Decimal,
        reference: str,
        method: str,
        now: datetime,
    ) -> Applied:
        """`booking.pay`, its writes left to `flush`: the pro-forma is paid and the funds
        leave now; the final invoice's number comes with `flush` (None until then)."""
        fee = invoice.amount - used
        assert Decimal(0) <= fee and used <= account.unapplied and self.takes(account)
        assert invoice.status == InvoiceStatus.OPEN
        invoice.status = InvoiceStatus.PAID
        invoice.paid_at = now
        invoice.updated_at = now
        account.unapplied -= used
        payment = _Payment(
            account, invoice, self._charges[invoice.id], used, fee, reference, method, new_id("inv")
        )
        self._payments.append(payment)
        return Applied(invoice.id, invoice.number, used, fee, payment.final_id, None)

    def flush(self, uow: UnitOfWork) -> dict[str, str]:
        """Write every payment `pay` took, in the order taken; returns the final invoices'
        numbers by id. Raises ValidationError when a balance would pass MAX_AMOUNT (the
        caller rolls back)."""
        payments, self._payments = self._payments, []
        if not payments:
            return {}
        now = self.now
        session = uow.session
        numbers = numbering.take_block(session, Series.FINAL, now, len(payments))
        credits = credit_many(
            uow,
            [
                Credit(
                    account=p.account,
                    kind="charge",
                    reference=p.charge.id,
                    amount=p.charge.amount,
                    counter=f"{engine.RECEIVABLE}:{p.charge.psp}",
                    description=f"{p.charge.purpose} via {p.charge.psp}",
                )
                for p in payments
            ],
            now,
        )
        legs: list[Legs] = []
        notes: list[tuple[str, str | None, dict[str, Any]]] = []
        settled: list[int] = []  # where each settlement's funds.available is in `notes`
        finals: list[tuple[Account, Invoice]] = []
        for p, (txn_id, balance), number in zip(payments, credits, numbers, strict=True):
            charge, account = p.charge, p.account
            # engine.apply, a success:
            psp_reference = (p.reference or p.proforma.number or "")[:120] or None
            charge.psp_reference = psp_reference or charge.psp_reference
            engine.move(charge, "succeeded", now)
            charge.transaction_id = txn_id
            charge.decline_code = charge.decline_text = None
            notes.append(
                (
                    "charge.succeeded",
                    charge.account_id,
                    {
                        "charge_id": charge.id,
                        "amount": format_amount(charge.amount, charge.currency),
                        "currency": charge.currency,
                        "psp": charge.psp,
                        "purpose": charge.purpose,
                        "psp_reference": charge.psp_reference,
                        "balance": format_amount(balance, account.currency),
                        "transaction_id": txn_id,
                    },
                )
            )
            # settlement.schedule (+ settle: a bank transfer is available on receipt):
            charge.settlement_status = "pending"
            charge.available_on, charge.settlement_rule, charge.settles_at = self._plans[charge.id]
            if charge.settles_at is not None and charge.settles_at <= now:
                charge.settles_at = now
                settled.append(len(notes))
                notes.append(("funds.available", None, settlement.available_data(charge)))
                legs.append(
                    Legs(
                        kind=settlement.KIND,
                        reference=charge.id,
                        currency=charge.currency,
                        legs=(
                            (f"{settlement.PENDING}:{charge.psp}", charge.amount),
                            (f"{settlement.AVAILABLE}:{charge.psp}", -charge.amount),
                        ),
                        description=(
                            f"settlement of {charge.id} ({charge.settlement_rule or 'no rule'})"
                        ),
                    )
                )
                charge.settlement_status = "available"
                charge.settled_at = now
            # auto_reload policy, a success: any success ends the back-off.
            account.auto_reload_backoff_until = None
            account.auto_reload_declines = 0
            account.auto_reload_soft_failures = 0
            account.auto_reload_failing_at = None
            # invoices: the final invoice issued and mailed, the pro-forma paid.
            final = invoices.final_of_proforma(
                account,
                p.proforma,
                charge,
                invoice_id=p.final_id,
                number=number,
                method=p.method,
                reference=p.reference,
                now=now,
            )
            session.add(final)
            finals.append((account, final))
            notes.append(("invoice.issued", final.account_id, invoices.issued_data(final)))
            notes.append(
                ("invoice.paid", p.proforma.account_id, invoices.paid_data(p.proforma, final))
            )
            # booking.pay: the money leaves the unapplied funds.
            legs.append(
                Legs(
                    kind="bank_apply",
                    reference=p.proforma.id,
                    currency=p.proforma.currency,
                    legs=(
                        (unapplied_code(account.id), -p.used),
                        (BANK_FEES, -p.fee),
                        (BANK_IN, p.proforma.amount),
                    ),
                    description=f"{p.proforma.number} paid from unapplied funds ({p.reference})",
                )
            )
        posted = post_legs_many(uow, legs, now)
        # As `settle`: no funds.available for a settlement the ledger already had.
        settle_posted = [
            txn for item, txn in zip(legs, posted, strict=True) if item.kind == settlement.KIND
        ]
        dropped = {at for at, txn in zip(settled, settle_posted, strict=True) if txn is None}
        events.record_many(uow, [n for i, n in enumerate(notes) if i not in dropped], now)
        invoice_mails.issued_many(uow, finals, now)
        return {p.final_id: number for p, number in zip(payments, numbers, strict=True)}
