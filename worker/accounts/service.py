"""Customer accounts: creation (with their ledger account) and the public view."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session, object_session

from config import get_settings
from worker.accounts import runway as runways
from worker.accounts import views
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.fx import service as fx
from worker.kernel import validation
from worker.kernel.clock import now as clock_now
from worker.kernel.errors import NotFound, ValidationError
from worker.ledger.models import Account, LedgerAccount


def create(
    uow: UnitOfWork,
    *,
    name: object,
    now: datetime,
    currency: object = None,
    country: object = "GB",
    emails: object = None,
    locale: object = "en",
    display_currency: object = None,
    company: object = None,
    finance_email: object = None,
) -> dict[str, Any]:
    """Validate everything first, then write the account and its ledger account together.

    `company`: the name invoices are made out to (seed 001: two accounts of one customer
    are told apart by it); `finance_email`: where invoices go instead of the
    invoice-and-alert addresses. Each account gets its own ISO 11649 payment reference
    (`bank_reference`, worker/kernel/bank_settings.py)."""
    # Imported here: `accounts show` / `list` read accounts without the ledger's write side
    # (its notices load the mail templates) or python-stdnum (the fast-CLI budget).
    from worker.kernel.bank_settings import new_creditor_reference
    from worker.ledger import service as ledger

    clean_name = validation.text(name, "name", max_length=200)
    assert clean_name is not None
    cur = validation.currency(currency or get_settings().default_currency)
    ctry = validation.country(country)
    addresses = validation.emails(emails)
    loc = validation.locale(locale)
    display = validation.currency(display_currency or cur, "display_currency")
    allowed = sorted({cur, "EUR", "USD"})
    if display not in allowed:
        raise ValidationError("display_currency", f"must be one of {', '.join(allowed)}")
    clean_company = validation.text(company, "company", max_length=200, required=False)
    finance = validation.emails([finance_email], "finance_email") if finance_email else []
    account = Account(
        id=new_id("acc"),
        name=clean_name,
        currency=cur,
        country=ctry,
        status="active",
        suspension_reason=None,
        emails=addresses,
        locale=loc,
        display_currency=display,
        company=clean_company,
        finance_email=finance[0] if finance else None,
        bank_reference=new_creditor_reference(),
        unapplied=Decimal("0"),
        created_at=now,
        updated_at=now,
    )
    uow.session.add(account)
    uow.session.flush()
    uow.session.add(
        LedgerAccount(
            code=ledger.customer_code(account.id),
            currency=cur,
            account_id=account.id,
            created_at=now,
        )
    )
    uow.session.flush()
    return view(account, now)


def get(session: Session, account_id: object) -> Account:
    account_id = validation.identifier(account_id, "account_id")
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound("account_id", f"no account {account_id[:60]!r}")
    return account


def view(account: Account, as_of: datetime | None = None) -> dict[str, Any]:
    """The shape `balancectl accounts show` prints (CONTRACT.md), with `runway` from the
    7 days of usage before `as_of` (default: now; worker/accounts/runway.py)."""
    moment = as_of or clock_now()
    session = object_session(account)
    runway = runways.compute(session, account, moment) if session is not None else None
    shown = views.shown(account, runway)
    display = _display(account, moment)
    if display is not None:
        shown["display"] = display
    return shown


def _display(account: Account, moment: datetime) -> dict[str, Any] | None:
    """`display {currency, balance, rate, rate_date, rate_stale}` when the account is shown
    in another currency (CONTRACT.md): the rate in force at `moment` (worker/fx/service.py)."""
    if account.display_currency == account.currency:
        return None
    session = object_session(account)
    if session is None:  # a detached account: no rates to read
        return None
    return fx.display(
        session,
        currency=account.currency,
        shown_in=account.display_currency,
        balance=account.balance,
        moment=moment,
    )
