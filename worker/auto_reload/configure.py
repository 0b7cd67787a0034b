"""Auto-reload settings: turn it on (checked before anything is written) or off.

A setting whose every reload would be skipped or refused is refused when it is made, with
the reason, naming the field (`never_runs`): otherwise it is accepted, every sweep skips it
silently, and the account runs down to zero. See `check_can_run`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from config import get_settings
from worker.accounts import service as accounts
from worker.auto_reload import plan
from worker.charges import engine as charges
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.kernel.errors import NeverRuns, NotFound, ValidationError
from worker.kernel.money import exponent, format_amount, parse_amount
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
    """Turn auto-reload on. Checks everything before writing anything.

    `threshold` and `amount`: decimal strings in the account currency, in whole minor units
    (EUR cents). Raises ValidationError naming the field for a malformed value, NotFound for
    an unknown account or method, NeverRuns (`never_runs`) for a setting that could never
    reload (`check_can_run`)."""
    account = ledger.lock_account(uow.session, account_id)
    limit = parse_amount(threshold, "threshold", allow_zero=True)
    value = charges.chargeable_amount(amount, account.currency, "amount")
    in_minor_units(limit, account.currency, "threshold")
    check_can_run(limit, value, account.currency)
    if method_id is None:
        method = payment_methods.default_for(uow.session, account.id)
        if method is None:
            raise NotFound(
                "method", "the account has no payment method; add a card or PayPal account first"
            )
    else:
        method = payment_methods.get_active(uow.session, account.id, method_id, "method")
    if method.type == "bank_transfer" or not get_adapter(method.psp, "method").on_demand:
        what = "WeChat Pay (top-ups only)" if method.type == "wechat_pay" else "bank transfer"
        raise ValidationError("method", f"auto-reload is not available for {what}")
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
    account.auto_reload_action_required_at = None
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


def in_minor_units(value: Decimal, currency: str, field: str) -> None:
    """A money setting in the currency's own digits (EUR 10.05, JPY 1000): the customer's
    dashboard and every reload deal in them."""
    exp = exponent(currency)
    if value != value.quantize(Decimal(1).scaleb(-exp)):
        raise ValidationError(
            field,
            f"{currency} has {exp} decimal place(s): {format_amount(value)} has more",
        )


def check_can_run(threshold: Decimal, amount: Decimal, currency: str) -> None:
    """Refuse (NeverRuns, naming the field) a setting under which no reload could ever be
    made. Reloads happen below the threshold and charge n x amount, the smallest n >= 1 that
    lands the balance above it (`plan.reload_amount`); the balance never goes below zero,
    so the largest reload a setting can need is the one from zero, when the account is
    depleted (its main case). In the account currency:

    | setting | why it could never reload |
    |---|---|
    | threshold 0 | the balance is never below zero |
    | amount above `AUTO_RELOAD_MAX_AMOUNT_PER_MONTH` | every reload is `capped_month` |
    | threshold whose reload from zero is above that cap | a depleted account never reloads |

    Checked by `configure` before this: amount and threshold in whole minor units (what a PSP
    is charged in), a card or PayPal method (on demand) of an enabled PSP. The PSP adapters
    declare no largest charge, and the sandbox's decline and soft-failure amounts are data of
    the PSP, not of the setting: accepted. `AUTO_RELOAD_MAX_PER_DAY` refuses no setting: a
    reload is one charge however large n is."""
    if threshold <= 0:
        raise NeverRuns(
            "threshold",
            "must be above zero: the balance never goes below zero, so auto-reload would never run",
        )
    cap = get_settings().auto_reload_max_amount_per_month
    shown_cap = f"AUTO_RELOAD_MAX_AMOUNT_PER_MONTH ({format_amount(cap, currency)} {currency})"
    if amount > cap:
        raise NeverRuns(
            "amount",
            f"{format_amount(amount, currency)} {currency} is above {shown_cap}: every reload "
            "would be skipped as capped_month",
        )
    from_zero = plan.reload_amount(Decimal(0), threshold, amount)
    if from_zero > cap:
        raise NeverRuns(
            "threshold",
            f"from a zero balance, clearing {format_amount(threshold, currency)} takes a reload "
            f"of {format_amount(from_zero, currency)} {currency} ({from_zero / amount:f} x "
            f"{format_amount(amount, currency)}), above {shown_cap}: a depleted account would "
            "never be reloaded; lower the threshold or raise the amount",
        )


def turn_off(
    uow: UnitOfWork, *, account_id: object, now: datetime, reason: str = "customer"
) -> dict[str, Any]:
    account = ledger.lock_account(uow.session, account_id)
    if account.auto_reload_enabled:
        account.auto_reload_enabled = False
        account.updated_at = now
        events.record(uow, "auto_reload.disabled", account.id, {"reason": reason}, now)
    return accounts.view(account)
