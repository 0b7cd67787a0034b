"""What an operator does to accounts (issue 18): find them, change them, suspend them.

An operator's suspension (`suspension_reason: admin`) is a decision about the customer,
not about money: no credit lifts it (the depletion rule in worker/ledger/service.py only
re-activates `depleted`), usage debits are refused with `account_suspended`
(worker/usage/service.py), and auto-reload and new numbers stop (worker/auto_reload,
worker/numbers). Only `resume` ends it, and leaves the account as its money says: still
suspended as `depleted` when the balance is at or below `DEPLETION_FLOOR` after a debit
(made before the suspension or during it), active otherwise; read from the ledger, which is
kept, not from the events, which the outbox purge deletes.

Events (outbox, committed with the change): `account.updated {fields}`,
`account.suspended {reason, previous_status, previous_reason}`, `account.resumed {status,
suspension_reason}`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, cast, exists, or_, select
from sqlalchemy.orm import Session

from config import get_settings
from worker.accounts import service as accounts
from worker.db.session import UnitOfWork
from worker.kernel import validation
from worker.kernel.errors import ValidationError
from worker.kernel.money import format_amount
from worker.ledger import hooks as ledger_hooks
from worker.ledger import service as ledger
from worker.ledger.models import Account, LedgerTransaction
from worker.outbox import events

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
STATUSES = ("active", "suspended")


def row(account: Account) -> dict[str, Any]:
    """One account as `accounts list` prints it: no runway (one query per row otherwise)."""
    return {
        "id": account.id,
        "name": account.name,
        "company": account.company,
        "status": account.status,
        "suspension_reason": account.suspension_reason,
        "balance": format_amount(account.balance, account.currency),
        "currency": account.currency,
        "country": account.country,
        "emails": list(account.emails),
        "finance_email": account.finance_email,
    }


def _like(text: str) -> str:
    """A LIKE pattern matching `text` literally anywhere (`%`, `_`, `\\` escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_accounts(
    session: Session,
    *,
    status: object = None,
    search: object = None,
    limit: object = DEFAULT_LIMIT,
    after: object = None,
) -> list[dict[str, Any]]:
    """Accounts ordered by id, at most `limit` (1..1000, default 100), those with an id
    greater than `after` (the last id of the previous page: keyset paging, stable while
    accounts are added, since ids are time-ordered).

    `status`: `active` or `suspended`; `search`: free text (cleaned as every free text is,
    worker/kernel/validation.py `text`; LIKE wildcards match literally) found, in any case,
    in the name, company, invoice-and-alert addresses or finance address.
    Raises ValidationError naming `status`, `search`, `limit` or `after`."""
    query = select(Account).order_by(Account.id)
    if status is not None:
        if not isinstance(status, str) or status.strip().lower() not in STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
        query = query.where(Account.status == status.strip().lower())
    if search is not None:
        text = validation.text(search, "search", max_length=200)
        assert text is not None
        pattern = _like(text.lower())
        query = query.where(
            or_(
                Account.name.ilike(pattern, escape="\\"),
                Account.company.ilike(pattern, escape="\\"),
                Account.finance_email.ilike(pattern, escape="\\"),
                cast(Account.emails, String).ilike(pattern, escape="\\"),
            )
        )
    if after is not None:
        query = query.where(Account.id > validation.identifier(after, "after"))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return [row(a) for a in session.scalars(query.limit(limit))]


_UNSET: Any = object()


def update(
    uow: UnitOfWork,
    *,
    account_id: object,
    now: datetime,
    name: object = _UNSET,
    company: object = _UNSET,
    finance_email: object = _UNSET,
    emails: object = _UNSET,
    locale: object = _UNSET,
    display_currency: object = _UNSET,
    country: object = _UNSET,
) -> dict[str, Any]:
    """Change only what is given; prints the account (`accounts show`).

    Every value is checked before anything is written (ValidationError naming the field).
    An empty `company` or `finance_email` ("") clears it; `emails` replaces the
    invoice-and-alert list (at least one when alerts are on). The currency never changes
    (the ledger is kept in it). Records `account.updated {fields}` when anything changed."""
    account = ledger.lock_account(uow.session, account_id)
    changes: dict[str, Any] = {}
    if name is not _UNSET:
        changes["name"] = validation.text(name, "name", max_length=200)
    if company is not _UNSET:
        changes["company"] = validation.text(company, "company", max_length=200, required=False)
    if finance_email is not _UNSET:
        found = validation.emails([finance_email], "finance_email") if finance_email else []
        changes["finance_email"] = found[0] if found else None
    if emails is not _UNSET:
        addresses = validation.emails(emails)
        if not addresses and account.alerts_enabled:
            raise ValidationError(
                "email", "alerts are on: keep at least one address (or `alerts off` first)"
            )
        changes["emails"] = addresses
    if locale is not _UNSET:
        changes["locale"] = validation.locale(locale)
    if display_currency is not _UNSET:
        display = validation.currency(display_currency, "display_currency")
        allowed = sorted({account.currency, "EUR", "USD"})
        if display not in allowed:
            raise ValidationError("display_currency", f"must be one of {', '.join(allowed)}")
        changes["display_currency"] = display
    if country is not _UNSET:
        changes["country"] = validation.country(country)
    changed = sorted(k for k, v in changes.items() if getattr(account, k) != v)
    for key in changed:
        setattr(account, key, changes[key])
    if changed:
        account.updated_at = now
        events.record(uow, "account.updated", account.id, {"fields": changed}, now)
    return accounts.view(account, now)


def suspend(
    uow: UnitOfWork, *, account_id: object, reason: object, now: datetime
) -> dict[str, Any]:
    """Suspend as an operator (`suspension_reason: admin`), also over a depletion.

    `reason`: free text, required (stored in the event; card numbers redacted). Suspending
    an account an operator already suspended changes nothing and records nothing."""
    why = validation.text(reason, "reason", max_length=500)
    account = ledger.lock_account(uow.session, account_id)
    if account.suspension_reason == "admin":
        return accounts.view(account, now)
    data = {
        "reason": why,
        "suspension_reason": "admin",
        "previous_status": account.status,
        "previous_reason": account.suspension_reason,
    }
    account.status = "suspended"
    account.suspension_reason = "admin"
    account.updated_at = now
    events.record(uow, "account.suspended", account.id, data, now)
    return accounts.view(account, now)


def resume(uow: UnitOfWork, *, account_id: object, now: datetime) -> dict[str, Any]:
    """End an operator's suspension. Without one (never suspended, already resumed, or
    suspended only as depleted) nothing changes and nothing is recorded: a repeat is safe.

    The account is left as its money says (see the module docstring): `depleted` when the
    balance is at or below `DEPLETION_FLOOR` after a debit (before or during the
    suspension); active otherwise (a never-debited account at the floor included)."""
    account = ledger.lock_account(uow.session, account_id)
    if account.suspension_reason != "admin":
        return accounts.view(account, now)
    # The ledger alone decides, never the events (the outbox purge deletes them): only a
    # debit can take a balance down to the floor, and only a credit above it lifts a
    # depletion, so a balance at or below the floor after any debit is a depleted one.
    depleted = account.balance <= get_settings().depletion_floor and bool(
        uow.session.scalar(
            select(
                exists().where(
                    LedgerTransaction.account_id == account.id,
                    LedgerTransaction.amount < Decimal(0),
                )
            )
        )
    )
    account.status = "suspended" if depleted else "active"
    account.suspension_reason = "depleted" if depleted else None
    account.updated_at = now
    if not depleted:
        ledger_hooks.after_resume(uow, account, now)  # numbers: restore (worker/wiring.py)
    events.record(
        uow,
        "account.resumed",
        account.id,
        {"status": account.status, "suspension_reason": account.suspension_reason},
        now,
    )
    return accounts.view(account, now)
