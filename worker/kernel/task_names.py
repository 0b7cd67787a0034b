"""Every Celery task name, in one place (the public ones are in CONTRACT.md).

Rules enqueue follow-ups by name (after commit) without importing the task modules, the
app routes and schedules by these names, and the task decorators register under them.
"""

from __future__ import annotations

from typing import Final

USAGE_DEBIT: Final = "balance.usage.debit"
USAGE_DEBIT_MANY: Final = "balance.usage.debit_many"
LEDGER_ADJUST: Final = "balance.ledger.adjust"
LEDGER_AUDIT: Final = "balance.ledger.audit"
EVENTS_RELAY: Final = "balance.events.relay"
MAIL_SEND_PENDING: Final = "balance.mail.send_pending"
OUTBOX_PURGE: Final = "balance.outbox.purge"
PAYMENTS_TOP_UP: Final = "balance.payments.top_up"
PAYMENTS_SYNC_PENDING: Final = "balance.payments.sync_pending"
AUTO_RELOAD_SWEEP: Final = "balance.auto_reload.sweep"
AUTO_RELOAD_RELOAD: Final = "balance.auto_reload.reload"
AUTO_RELOAD_RELOAD_BATCH: Final = "balance.auto_reload.reload_batch"
AUTO_RELOAD_RELOAD_NOW: Final = "balance.auto_reload.reload_now"
ALERTS_SCAN: Final = "balance.alerts.scan"
SETTLEMENT_ROLL_FORWARD: Final = "balance.settlement.roll_forward"
INVOICES_ISSUE_DUE: Final = "balance.invoices.issue_due"
BANK_TRANSFER_RECEIVED: Final = "balance.bank.transfer_received"
PAYMENTS_REFUND: Final = "balance.payments.refund"
REFUNDS_SYNC: Final = "balance.refunds.sync"
FEES_COLLECT: Final = "balance.fees.collect"
FEES_COLLECT_ACCOUNT: Final = "balance.fees.collect_account"
