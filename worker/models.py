"""Every domain's models in one import, so the metadata names every table (Alembic's
autogenerate, tests that inspect the schema). Code imports models from their domain."""

from __future__ import annotations

from worker.bank.models import BankTransfer
from worker.charges.models import Charge
from worker.db.base import Base
from worker.invoices.models import Invoice, InvoiceCounter
from worker.ledger.models import Account, LedgerAccount, LedgerTransaction, Posting
from worker.numbers.models import Number
from worker.outbox.models import Event, Mail
from worker.payment_methods.models import PaymentMethod
from worker.refunds.models import Refund

__all__ = [
    "Account",
    "BankTransfer",
    "Base",
    "Charge",
    "Event",
    "Invoice",
    "InvoiceCounter",
    "LedgerAccount",
    "LedgerTransaction",
    "Mail",
    "Number",
    "PaymentMethod",
    "Posting",
    "Refund",
]
