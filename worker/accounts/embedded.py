"""`accounts show` on a SQLite database read with the standard library (fast CLI, issue 18).

Importing SQLAlchemy (engine, SQL compiler, ORM) takes longer than the whole 0.3 s budget
of `balancectl accounts show` on the embedded default (README "CLI start-up"), so this read
asks SQLite directly for the one account row and its runway's usage total, and builds the
printed shape with the same pure functions as the ORM path (worker/accounts/views.py,
worker/accounts/runway.py). It answers only the common case and returns None for anything
else, and the caller then runs the ORM path (`accounts.service.view`), which gives the
errors and the rest:
- no such account (the ORM path raises NotFound naming `account_id`),
- an account shown in another currency (`display` needs the rate rules of worker/fx),
- any SQLite error (busy, a schema this code does not know).

The values are decoded as worker/db/types.py stores them on SQLite: money as integer
micro-units, timestamps as naive UTC `YYYY-MM-DD HH:MM:SS.ffffff` text, booleans as 0/1,
`emails` as JSON text. tests/accounts/test_embedded_show.py checks it against the ORM.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from worker.accounts import runway as runways
from worker.accounts import views
from worker.kernel.money import from_micros

_MONEY = ("balance", "auto_reload_threshold", "auto_reload_amount", "alert_threshold", "unapplied")
_MOMENTS = ("created_at", "auto_reload_action_required_at", "alert_sent_at")
_FLAGS = ("auto_reload_enabled", "alerts_enabled")
_COLUMNS = (
    "id",
    "name",
    "currency",
    "country",
    "status",
    "suspension_reason",
    "emails",
    "locale",
    "display_currency",
    "company",
    "finance_email",
    "bank_reference",
    "auto_reload_method_id",
    "alert_state",
    *_MONEY,
    *_MOMENTS,
    *_FLAGS,
)
# As SQLAlchemy's SQLite DATETIME binds a timestamp (always with microseconds), so text
# comparison orders the same as time.
_STORED = "%Y-%m-%d %H:%M:%S.%f"


def _stored(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).strftime(_STORED)


def _moment(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _money(value: int | None) -> Decimal | None:
    return None if value is None else from_micros(int(value))


def show(path: Path, account_id: str, as_of: datetime) -> dict[str, Any] | None:
    """The account `account_id` as `accounts show` prints it at `as_of` (aware), read from
    the SQLite file `path` (which exists and is at the schema head), or None: the caller
    then uses the ORM path (see the module docstring for when)."""
    try:
        # The ORM engine's busy timeout; statements as written (no implicit transactions).
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        # One read transaction: the balance and the usage total come from one snapshot even
        # while `balancectl run` posts (WAL readers never block the writer).
        conn.execute("BEGIN")
        row = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM accounts WHERE id = ?",
            (account_id,),
        ).fetchone()
        if row is None:
            return None
        values: dict[str, Any] = dict(zip(_COLUMNS, row, strict=True))
        if values["display_currency"] != values["currency"]:
            return None
        [[total]] = conn.execute(
            "SELECT sum(amount) FROM ledger_transactions WHERE account_id = ? "
            "AND created_at >= ? AND created_at < ? AND kind = ?",
            (account_id, _stored(as_of - runways.WINDOW), _stored(as_of), runways.USAGE_KIND),
        ).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    for name in _MONEY:
        values[name] = _money(values[name])
    for name in _MOMENTS:
        values[name] = _moment(values[name])
    for name in _FLAGS:
        values[name] = bool(values[name])
    values["emails"] = json.loads(values["emails"]) if values["emails"] else []
    account = SimpleNamespace(**values)
    spend = -from_micros(int(total)) if total is not None else Decimal(0)
    return views.shown(account, runways.from_spend(account, spend, as_of))
