"""Wire the domains that react to charge outcomes into the charge engine.

The engine sits below them (it imports none of them), so each hands it a hook: settlement
dates a success, auto-reload's failure policy judges every outcome and every charge the
engine closes as failed on our side (`fail`). Importing this module
installs them; the Celery app loads it with the task modules, and the CLI and the tests
import it. `charges.engine.apply` refuses to record an outcome while a required hook is
missing, so a forgotten import fails loudly instead of skipping a rule.
"""

from __future__ import annotations

from worker.auto_reload import policy
from worker.bank import service as bank
from worker.charges import engine
from worker.invoices import pdf as invoice_pdf
from worker.invoices import service as invoices
from worker.ledger import hooks as ledger_hooks
from worker.numbers import hooks as numbers
from worker.outbox import mail
from worker.settlement import service as settlement


def install() -> None:
    """Install every outcome hook (idempotent)."""
    engine.install_hook("settlement", settlement.on_charge_outcome)
    engine.install_hook("auto_reload", policy.after_outcome)
    # Invoices first (a pending bank transfer's pro-forma), then the bank: it pays a new
    # pro-forma at once from unapplied funds that cover it.
    engine.install_hook("invoices", invoices.on_charge_outcome)
    engine.install_hook("bank", bank.on_charge_outcome)
    engine.install_view_extra("invoices", invoices.charge_extras)
    mail.install_attachment_renderer("invoice_pdf", invoice_pdf.attachment)
    engine.install_close_hook("auto_reload", policy.after_close)
    # Virtual numbers react to balance changes: a credit retries fees, a depletion suspends.
    ledger_hooks.install_credit_hook("numbers", numbers.on_credit)
    ledger_hooks.install_depletion_hook("numbers", numbers.on_depletion)
    ledger_hooks.install_resume_hook("numbers", numbers.on_resume)  # accounts resume


install()
