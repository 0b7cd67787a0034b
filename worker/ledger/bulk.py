"""Many customer debits in a few statements (`balance.usage.debit_many`, issue 16), beside
`ledger.post` (one transaction at a time).

The caller locks the accounts with `lock_accounts` (one statement, in id order, so two
batches over the same accounts never deadlock), judges each debit against the balance it
keeps in memory, and hands the accepted ones to `post_many`, which writes them all with one
INSERT for the transactions, one for the postings and one UPDATE batch for the cached
balances, then applies the same rules `ledger.post` and `ledger.reload_if_crossed` apply to
a single debit: the depletion rule at the debit that reaches the floor (once: the account is
suspended from then on) and the on-debit auto-reload at the debit that crosses the
threshold (once per account and batch: a batch holds no credit to cross it twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, text, tuple_, update
from sqlalchemy.orm import Session

from config import get_settings
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.ledger.models import Account, LedgerAccount, LedgerTransaction, Posting
from worker.ledger.service import apply_depletion_rule, system_account_id

_ACCOUNTS = cast(Table, Account.__table__)
_LEDGER_ACCOUNTS = cast(Table, LedgerAccount.__table__)
_TXNS = cast(Table, LedgerTransaction.__table__)
_POSTINGS = cast(Table, Posting.__table__)

_UPDATE_BALANCE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("b_id"))
    .values(balance=bindparam("b_balance"), updated_at=bindparam("b_now"))
)


@dataclass
class LockedAccount:
    """What a batch needs of a locked account row: `balance` is the running balance the
    caller judges debits against, `locked_balance` the balance as locked (never changed)."""

    id: str
    currency: str
    balance: Decimal
    locked_balance: Decimal
    status: str
    auto_reload_enabled: bool
    auto_reload_threshold: Decimal | None
    ledger_account_id: int
    suspension_reason: str | None = None  # `admin`: usage refused (worker/accounts/admin.py)


@dataclass(frozen=True)
class Debit:
    """One accepted debit: `amount` positive (what leaves the balance), `balance_after` the
    balance once it and every earlier debit of the batch on the account are applied."""

    transaction_id: str
    account_id: str
    kind: str
    reference: str
    amount: Decimal
    balance_after: Decimal
    description: str | None


def lock_accounts(session: Session, account_ids: Sequence[str]) -> dict[str, LockedAccount]:
    """Lock these accounts (those that exist) for this transaction, once each, in id order
    (`SELECT ... ORDER BY id FOR UPDATE`): PostgreSQL locks the rows in the order it returns
    them, so every batch takes its locks in the same global order and none waits for another
    that waits for it. A single `debit` holds one account lock at a time, so it never closes
    a cycle either. Missing ids are simply absent from the result."""
    if not account_ids:
        return {}
    stmt = (
        select(
            _ACCOUNTS.c.id,
            _ACCOUNTS.c.currency,
            _ACCOUNTS.c.balance,
            _ACCOUNTS.c.status,
            _ACCOUNTS.c.suspension_reason,
            _ACCOUNTS.c.auto_reload_enabled,
            _ACCOUNTS.c.auto_reload_threshold,
            _LEDGER_ACCOUNTS.c.id.label("ledger_account_id"),
        )
        .join(_LEDGER_ACCOUNTS, _LEDGER_ACCOUNTS.c.account_id == _ACCOUNTS.c.id)
        .where(_ACCOUNTS.c.id.in_(sorted(set(account_ids))))
        .order_by(_ACCOUNTS.c.id)
        .with_for_update(of=_ACCOUNTS)
    )
    return {
        row.id: LockedAccount(
            id=row.id,
            currency=row.currency,
            balance=row.balance,
            locked_balance=row.balance,
            status=row.status,
            suspension_reason=row.suspension_reason,
            auto_reload_enabled=row.auto_reload_enabled,
            auto_reload_threshold=row.auto_reload_threshold,
            ledger_account_id=row.ledger_account_id,
        )
        for row in session.execute(stmt)
    }


# PostgreSQL: the keys as two arrays joined to the unique index (one index probe per key).
# `(account_id, reference) IN (...)` becomes an OR chain that the planner answers with every
# row of each account (a hot account has millions) and plans in time growing with the list.
_FIND_PG = text(
    "SELECT t.account_id, t.reference, t.id, t.amount, t.currency, t.balance_after"
    " FROM unnest(CAST(:accounts AS text[]), CAST(:references AS text[])) AS k(a, r)"
    " JOIN ledger_transactions t ON t.account_id = k.a AND t.kind = :kind AND t.reference = k.r"
).columns(
    _TXNS.c.account_id, _TXNS.c.reference, _TXNS.c.id, _TXNS.c.amount, _TXNS.c.currency,
    _TXNS.c.balance_after,
)  # fmt: skip
# PostgreSQL: every cached balance in one statement.
_UPDATE_BALANCES_PG = text(
    "UPDATE accounts SET balance = v.balance, updated_at = :now"
    " FROM unnest(CAST(:ids AS text[]), CAST(:balances AS numeric[])) AS v(id, balance)"
    " WHERE accounts.id = v.id"
)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def find_transactions(
    session: Session, kind: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Any]:
    """Existing customer transactions of `kind` by (account_id, reference), in one query:
    rows with `id, amount, currency, balance_after`."""
    if not keys:
        return {}
    unique = sorted(set(keys))
    if _postgres(session):
        rows = session.execute(
            _FIND_PG,
            {
                "accounts": [a for a, _ in unique],
                "references": [r for _, r in unique],
                "kind": kind,
            },
        )
    else:  # the embedded SQLite: a row-value IN list (it has no arrays)
        rows = session.execute(
            select(
                _TXNS.c.account_id,
                _TXNS.c.reference,
                _TXNS.c.id,
                _TXNS.c.amount,
                _TXNS.c.currency,
                _TXNS.c.balance_after,
            ).where(
                _TXNS.c.kind == kind,
                tuple_(_TXNS.c.account_id, _TXNS.c.reference).in_(unique),
            )
        )
    return {(row.account_id, row.reference): row for row in rows}


def post_many(
    uow: UnitOfWork,
    locked: dict[str, LockedAccount],
    debits: Sequence[Debit],
    *,
    counter: str,
    now: datetime,
) -> None:
    """Write `debits` (in order; each account's in the order they were judged) against
    `counter`, with the accounts of `locked` held by this transaction, and apply the
    depletion and on-debit reload rules as `ledger.post` + `ledger.reload_if_crossed` do.

    The rules compare each debit's balance before and after, starting from each account's
    `locked_balance`. Raises nothing for valid input;
    the caller has checked funds (a debit never takes a balance below zero)."""
    if not debits:
        return
    session = uow.session
    counters: dict[str, int] = {}
    txn_rows: list[dict[str, Any]] = []
    posting_rows: list[dict[str, Any]] = []
    final: dict[str, Decimal] = {}
    for debit in debits:
        account = locked[debit.account_id]
        currency = account.currency
        counter_id = counters.get(currency)
        if counter_id is None:
            counter_id = counters[currency] = system_account_id(session, counter, currency, now)
        txn_rows.append(
            {
                "id": debit.transaction_id,
                "account_id": debit.account_id,
                "kind": debit.kind,
                "reference": debit.reference,
                "amount": -debit.amount,
                "currency": currency,
                "balance_after": debit.balance_after,
                "description": debit.description,
                "created_at": now,
            }
        )
        # Customer leg first, as `ledger.post` writes them.
        posting_rows.append(
            {
                "transaction_id": debit.transaction_id,
                "ledger_account_id": account.ledger_account_id,
                "amount": -debit.amount,
            }
        )
        posting_rows.append(
            {
                "transaction_id": debit.transaction_id,
                "ledger_account_id": counter_id,
                "amount": debit.amount,
            }
        )
        final[debit.account_id] = debit.balance_after
    if session.new:  # an ORM row pending in this session (none in a task): keep FK order
        session.flush()
    connection = session.connection()
    connection.execute(insert(_TXNS), txn_rows)
    connection.execute(insert(_POSTINGS), posting_rows)
    ordered = sorted(final.items())
    if _postgres(session):
        connection.execute(
            _UPDATE_BALANCES_PG,
            {"ids": [k for k, _ in ordered], "balances": [v for _, v in ordered], "now": now},
        )
    else:
        connection.execute(
            _UPDATE_BALANCE, [{"b_id": k, "b_balance": v, "b_now": now} for k, v in ordered]
        )
    _apply_rules(uow, locked, debits, now)


def _apply_rules(
    uow: UnitOfWork, locked: dict[str, LockedAccount], debits: Sequence[Debit], now: datetime
) -> None:
    """Depletion at the first debit that reaches the floor on an active account (one event,
    one mail, the depletion hooks), and one on-debit reload per account whose balance
    crosses its threshold, both judged debit by debit as a run of single debits would."""
    floor = get_settings().depletion_floor
    status = {key: account.status for key, account in locked.items()}
    before = {key: account.locked_balance for key, account in locked.items()}
    for debit in debits:
        account = locked[debit.account_id]
        previous = before[debit.account_id]
        before[debit.account_id] = debit.balance_after
        threshold = account.auto_reload_threshold
        if (
            account.auto_reload_enabled
            and threshold is not None
            and previous >= threshold > debit.balance_after
        ):
            uow.enqueue(task_names.AUTO_RELOAD_RELOAD_NOW, account.id)
        if debit.balance_after <= floor and status[debit.account_id] == "active":
            status[debit.account_id] = "suspended"
            _deplete(uow, account, debit, now)


def _deplete(uow: UnitOfWork, locked: LockedAccount, debit: Debit, now: datetime) -> None:
    """The depletion rule on the ORM row (events, hooks and mail take one), shown the
    balance as it was right after the depleting debit, then set back to the batch's final
    balance (already written) so the flush writes the status change and nothing else new."""
    session = uow.session
    account = session.get(Account, locked.id, populate_existing=True)
    assert account is not None  # locked by this transaction
    final = account.balance
    account.balance = debit.balance_after
    txn = LedgerTransaction(
        id=debit.transaction_id,
        account_id=debit.account_id,
        kind=debit.kind,
        reference=debit.reference,
        amount=-debit.amount,
        currency=locked.currency,
        balance_after=debit.balance_after,
        description=debit.description,
        created_at=now,
    )
    apply_depletion_rule(uow, account, txn, now)
    account.balance = final
