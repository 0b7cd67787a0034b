"""The account as `balancectl accounts show` prints it (CONTRACT.md), without `display`.

Pure: no database and no SQLAlchemy, so the ORM's `accounts.service.view` and the embedded
default's SQLite read (worker/accounts/embedded.py, the fast CLI of issue 18) build one
shape from one function.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from worker.accounts.runway import Runway
from worker.kernel.clock import isoformat
from worker.kernel.money import format_amount


def _opt(value: Any, currency: str) -> str | None:
    return None if value is None else format_amount(value, currency)


def shown(account: Any, runway: Runway | None) -> dict[str, Any]:
    """`account`: an `Account`, or any object with its column attributes (Decimal money,
    aware UTC datetimes, `emails` a list); `runway`: None for a detached account."""
    cur = account.currency
    return {
        "id": account.id,
        "name": account.name,
        "currency": cur,
        "country": account.country,
        "status": account.status,
        "suspension_reason": account.suspension_reason,
        "balance": format_amount(account.balance, cur),
        "locale": account.locale,
        "display_currency": account.display_currency,
        "emails": list(account.emails),
        "company": account.company,
        "finance_email": account.finance_email,
        "bank_reference": account.bank_reference,
        "unapplied": format_amount(account.unapplied or Decimal("0"), cur),
        "created_at": isoformat(account.created_at),
        "runway": runway.view(cur) if runway is not None else None,
        "auto_reload": {
            "enabled": account.auto_reload_enabled,
            "threshold": _opt(account.auto_reload_threshold, cur),
            "amount": _opt(account.auto_reload_amount, cur),
            "payment_method_id": account.auto_reload_method_id,
            # Paused since then: a reload needed the cardholder (3-D Secure); a new default
            # method resumes it. None when not paused.
            "action_required_at": (
                isoformat(account.auto_reload_action_required_at)
                if account.auto_reload_action_required_at
                else None
            ),
        },
        "alerts": {
            "enabled": account.alerts_enabled,
            "threshold": _opt(account.alert_threshold, cur),
            "emails": list(account.emails),
            "state": account.alert_state,
            "last_alert_at": isoformat(account.alert_sent_at) if account.alert_sent_at else None,
        },
    }
