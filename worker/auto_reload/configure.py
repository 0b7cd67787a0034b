"""Auto-reload settings: turn it on (checked before anything is written) or off."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.accounts import service as accounts
from worker.charges import engine as charges
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.kernel.errors import NotFound, ValidationError
from worker.kernel.money import format_amount, parse_amount
from worker.ledger import service as ledger
from worker.outbox import events
from worker.payment_methods import service as payment_methods
from worker.psp.registry import get_adapter


def configure(
    uow: UnitOfWork,
    *,
    account_id: object,
    threshold: object,
    amount: object,
    method_id: object = None,
    now: datetime,
) -> dict[str, Any]:
    """Turn auto-reload on. Checks everything before writing anything."""
    account = ledger.lock_account(uow.session, account_id)
    limit = parse_amount(threshold, "threshold", allow_zero=True)
    value = charges.chargeable_amount(amount, account.currency, "amount")
    if method_id is None:
        method = payment_methods.default_for(uow.session, account.id)
        if method is None:
            raise NotFound(
                "method", "the account has no payment method; add a card or PayPal account first"
            )
    else:
        method = payment_methods.get_active(uow.session, account.id, method_id, "method")
    if method.type == "bank_transfer" or not get_adapter(method.psp, "method").on_demand:
        raise ValidationError("method", "auto-reload is not available for bank transfer")
    account.auto_reload_enabled = True
    account.auto_reload_threshold = limit
    account.auto_reload_amount = value
    account.auto_reload_method_id = method.id
    # A new setting is a fresh start: the customer acted (as the mails ask them to).
    account.auto_reload_declines = 0
    account.auto_reload_soft_failures = 0
    account.auto_reload_failing_at = None
    account.auto_reload_backoff_until = None
    account.auto_reload_capped_until = None
    account.updated_at = now
    events.record(
        uow,
        "auto_reload.enabled",
        account.id,
        {
            "threshold": format_amount(limit, account.currency),
            "amount": format_amount(value, account.currency),
            "payment_method_id": method.id,
        },
        now,
    )
    if account.balance < limit:  # already below: do not wait for the sweep
        uow.enqueue(task_names.AUTO_RELOAD_RELOAD_NOW, account.id)
    return accounts.view(account)


def turn_off(
    uow: UnitOfWork, *, account_id: object, now: datetime, reason: str = "customer"
) -> dict[str, Any]:
    account = ledger.lock_account(uow.session, account_id)
    if account.auto_reload_enabled:
        account.auto_reload_enabled = False
        account.updated_at = now
        events.record(uow, "auto_reload.disabled", account.id, {"reason": reason}, now)
    return accounts.view(account)
