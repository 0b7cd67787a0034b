"""The double-entry ledger: the only code that changes a balance (and its read side,
re-exported from worker/ledger/queries.py, so `ledger.audit` is where callers look).

`post` writes one transaction whose two postings sum to zero, updates the cached
balance in the same DB transaction, and applies the depletion rule.

Longer than 400 lines on purpose: the one write path of a customer balance and the prebuilt
statements it runs (the hot path of every debit) read best side by side.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import psycopg
from sqlalchemy import Table, and_, bindparam, case, insert, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from config import get_settings
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.kernel import task_names, validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import NotFound, ValidationError
from worker.kernel.money import MAX_AMOUNT, format_amount
from worker.ledger import hooks, notices
from worker.ledger.models import Account, LedgerAccount, LedgerTransaction, Posting
from worker.ledger.queries import (  # the ledger's read side, re-exported: one facade
    AuditReport as AuditReport,
)
from worker.ledger.queries import audit as audit
from worker.ledger.queries import list_transactions as list_transactions
from worker.ledger.queries import system_balances as system_balances
from worker.ledger.queries import transaction_view as transaction_view
from worker.outbox import events

# Counter-accounts, one per currency.
USAGE_REVENUE = "usage_revenue"
ADJUSTMENTS = "adjustments"


def customer_code(account_id: str) -> str:
    return f"customer:{account_id}"


# System ledger-account ids per database (URL) and code. A row never changes once made, but
# a test database can be emptied (TRUNCATE ... RESTART IDENTITY): `post` checks the cached id
# against the code in the statement that uses it and looks it up again when it is stale, and
# `clear_caches()` empties the cache.
_system_ids: dict[tuple[str, str], int] = {}
_POSTINGS = cast(Table, Posting.__table__)


# Hot statements, built once (no per-call construction or cache-key work).
# populate_existing: the row is re-read under the lock. A caller that kept the account from
# an earlier transaction (auto-reload: lock, commit, PSP call, apply) must not post from a
# balance that a debit or top-up changed meanwhile.
_LOCK_ACCOUNT = (
    select(Account)
    .where(Account.id == bindparam("id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_MONEY = _POSTINGS.c.amount.type  # its type stores money exactly on every backend
_POST_PAIR = insert(_POSTINGS).from_select(
    ["transaction_id", "ledger_account_id", "amount"],
    select(
        bindparam("txn_id", type_=LedgerTransaction.__table__.c.id.type),
        LedgerAccount.id,
        case(
            (LedgerAccount.account_id.is_(None), bindparam("counter_amount", type_=_MONEY)),
            else_=bindparam("amount", type_=_MONEY),
        ),
    )
    .where(
        or_(
            LedgerAccount.account_id == bindparam("account_id"),
            and_(LedgerAccount.id == bindparam("cached"), LedgerAccount.code == bindparam("code")),
        )
    )
    .order_by(case((LedgerAccount.account_id.is_(None), 1), else_=0)),  # customer leg first
)


def clear_caches() -> None:
    _system_ids.clear()


def _db_key(session: Session) -> str:
    return str(session.get_bind().engine.url)


def system_account_id(session: Session, name: str, currency: str, now: datetime) -> int:
    """Id of a system ledger account, created on first use (race-safe upsert)."""
    code = f"{name}:{currency}"
    found = session.scalar(select(LedgerAccount.id).where(LedgerAccount.code == code))
    if found is not None:
        _system_ids[(_db_key(session), code)] = found
        return found
    values: dict[str, Any] = {"code": code, "currency": currency, "created_at": now}
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = pg_insert(LedgerAccount).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite_insert(LedgerAccount).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover
        stmt = insert(LedgerAccount).values(values)
    session.execute(stmt)
    made = session.execute(select(LedgerAccount.id).where(LedgerAccount.code == code)).scalar_one()
    _system_ids[(_db_key(session), code)] = made
    return made


def lock_account(session: Session, account_id: object) -> Account:
    """The account row, locked for this transaction: balance changes are serialised per account."""
    account_id = validation.identifier(account_id, "account_id")
    account = session.scalars(_LOCK_ACCOUNT, {"id": account_id}).one_or_none()
    if account is None:
        raise NotFound("account_id", f"no account {account_id[:60]!r}")
    return account


def check_fits(account: Account, amount: Decimal) -> None:
    """The balance after `amount` (signed, as the customer sees it) can be stored, or
    ValidationError naming `amount` (nothing written): a credit that would pass
    `MAX_AMOUNT` used to fail as a database overflow."""
    if abs(account.balance + amount) > MAX_AMOUNT:
        raise ValidationError(
            "amount",
            f"would take the balance beyond {format_amount(MAX_AMOUNT)}, the largest amount "
            "an account can hold",
        )


def customer_ledger_id(session: Session, account_id: str) -> int:
    return session.execute(
        select(LedgerAccount.id).where(LedgerAccount.account_id == account_id)
    ).scalar_one()


# Built once, like _LOCK_ACCOUNT: every debit asks it (issue 16: no per-call construction).
_FIND_TRANSACTION = select(LedgerTransaction).where(
    LedgerTransaction.account_id == bindparam("account_id"),
    LedgerTransaction.kind == bindparam("kind"),
    LedgerTransaction.reference == bindparam("reference"),
)


def find_transaction(
    session: Session, account_id: str, kind: str, reference: str
) -> LedgerTransaction | None:
    return session.scalars(
        _FIND_TRANSACTION, {"account_id": account_id, "kind": kind, "reference": reference}
    ).one_or_none()


def _loader(model: Any) -> tuple[str, list[tuple[str, Any]]]:
    """The column list of `model`'s table and each mapped attribute with its column."""
    pairs = [(prop.key, prop.columns[0]) for prop in model.__mapper__.column_attrs]
    return ", ".join(f'"{column.name}"' for _key, column in pairs), pairs


_ACCOUNT_COLUMNS, _ACCOUNT_ATTRS = _loader(Account)
_TXN_COLUMNS, _TXN_ATTRS = _loader(LedgerTransaction)
_LOCK_SQL = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = %(id)s FOR UPDATE"
_FIND_SQL = (
    f"SELECT {_TXN_COLUMNS} FROM ledger_transactions "
    "WHERE account_id = %(account_id)s AND kind = %(kind)s AND reference = %(reference)s"
)


_processors: dict[tuple[str, Any], list[tuple[str, Any]]] = {}


def _as_loaded(session: Session, model: Any, attrs: list[tuple[str, Any]], row: Any) -> Any:
    """An object of `model` from a raw row, in the session as if a query had loaded it
    (each column's result processing, as SQLAlchemy's own loading applies it)."""
    dialect = session.get_bind().dialect
    processors = _processors.get((dialect.name, model))
    if processors is None:
        processors = _processors[(dialect.name, model)] = [
            (key, column.type.result_processor(dialect, None)) for key, column in attrs
        ]
    # Filled as SQLAlchemy's own loading fills a row's object: straight into its __dict__,
    # not through the instrumented constructor (40 attribute events for an account: a
    # tenth of a debit's Python time, issue 16); no history, so nothing to flush.
    instance = model.__mapper__.class_manager.new_instance()
    state = instance.__dict__
    for (key, process), value in zip(processors, row, strict=True):
        state[key] = process(value) if process is not None else value
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


def lock_account_and_find(
    session: Session, account_id: object, kind: str, reference: str
) -> tuple[Account, LedgerTransaction | None]:
    """`lock_account`, then `find_transaction` for that account, `kind` and `reference`.

    PostgreSQL, on a session that holds no objects yet (a task's unit of work): BEGIN, the
    lock and the look-up go in one psycopg pipeline, one round trip instead of three
    (issue 16). The server runs them in order, and the look-up takes its snapshot only once
    the lock is held, so it sees a debit that committed while this one waited (a sub-select
    of the locking statement would not). Elsewhere, the two statements one after the other.
    Raises NotFound naming `account_id`, ValidationError for a malformed id.
    """
    account_id = validation.identifier(account_id, "account_id")
    if session.get_bind().dialect.name != "postgresql" or len(session.identity_map) or session.new:
        account = lock_account(session, account_id)
        return account, find_transaction(session, account.id, kind, reference)
    raw = cast("psycopg.Connection[Any]", session.connection().connection.driver_connection)
    params = {"account_id": account_id, "kind": kind, "reference": reference}
    try:
        with raw.pipeline():
            locking = raw.cursor()
            locking.execute(_LOCK_SQL, {"id": account_id})
            finding = raw.cursor()
            finding.execute(_FIND_SQL, params)
        account_row = locking.fetchone()
        txn_row = finding.fetchone()
    except psycopg.Error as exc:  # as SQLAlchemy raises it: DbTask retries OperationalError
        raise DBAPIError.instance(_LOCK_SQL, params, exc, psycopg.Error) from exc
    if account_row is None:
        raise NotFound("account_id", f"no account {account_id[:60]!r}")
    account = _as_loaded(session, Account, _ACCOUNT_ATTRS, account_row)
    if txn_row is None:
        return account, None
    return account, _as_loaded(session, LedgerTransaction, _TXN_ATTRS, txn_row)


def post(
    uow: UnitOfWork,
    account: Account,
    *,
    kind: str,
    reference: str,
    amount: Decimal,
    counter: str,
    description: str | None,
    now: datetime,
) -> LedgerTransaction:
    """Move `amount` (signed, as the customer sees it) between the account and `counter`.

    The caller holds the account row lock and has checked funds; this writes the
    balanced pair of postings, the cached balance and any status change together.
    """
    check_fits(account, amount)
    session = uow.session
    txn = LedgerTransaction(
        id=new_id("txn"),
        account_id=account.id,
        kind=kind,
        reference=reference,
        amount=amount,
        currency=account.currency,
        balance_after=account.balance + amount,
        description=description,
        created_at=now,
    )
    # Core INSERTs, then the object joins the session as already stored: no ORM flush
    # (a third of the cost of a post). Rows still pending in the session (a ledger account
    # made in this transaction) are flushed first: the postings' INSERT ... SELECT and its
    # row count must see them.
    if session.new:
        session.flush()
    # PostgreSQL: the transaction and its postings in one statement (one round trip fewer
    # per post, issue 16); elsewhere two.
    together = session.get_bind().dialect.name == "postgresql"
    if not together:
        session.connection().execute(_INSERT_TXN, _txn_row(txn))
    _post_pair(
        session,
        txn.id,
        account.id,
        counter,
        account.currency,
        amount,
        now,
        txn_row=_txn_row(txn) if together else None,
    )
    make_transient_to_detached(txn)
    session.add(txn)
    if together:
        # The same statement stored the new balance (`_POST_TXN_AND_PAIR`'s UPDATE): the
        # object learns it as already stored, so no UPDATE is flushed for it (issue 16).
        set_committed_value(account, "balance", account.balance + amount)
        set_committed_value(account, "updated_at", now)
    else:
        account.balance = account.balance + amount
        account.updated_at = now
    _apply_depletion_rule(uow, account, txn, now)
    _rearm_alert(account, txn)
    if amount > 0:
        hooks.after_credit(uow, account, txn, now)  # numbers: retry fees, restore (wiring.py)
    return txn


_TXN_TABLE = cast(Table, LedgerTransaction.__table__)
_INSERT_TXN = insert(_TXN_TABLE)
# PostgreSQL: `WITH new_txn AS (INSERT ... RETURNING id) INSERT INTO postings SELECT ...`:
# the pair of `_POST_PAIR`, its transaction id from the row the same statement inserts. Its
# row count is still the postings' (the stale-cache fallback in `_post_pair` reads it).
_NEW_TXN = (
    insert(_TXN_TABLE)
    .values({c.key: bindparam(f"t_{c.key}", type_=c.type) for c in _TXN_TABLE.columns})
    .returning(_TXN_TABLE.c.id)
    .cte("new_txn")
)
_ACCOUNTS = cast(Table, Account.__table__)
# ... and the account's cached balance, in the same statement (one round trip fewer per post:
# no UPDATE at flush). A data-modifying CTE runs whether or not the statement reads it.
_NEW_BALANCE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("u_id", type_=_ACCOUNTS.c.id.type))
    .values(
        balance=bindparam("u_balance", type_=_ACCOUNTS.c.balance.type),
        updated_at=bindparam("u_updated_at", type_=_ACCOUNTS.c.updated_at.type),
    )
    .cte("new_balance")
)
_POST_TXN_AND_PAIR = (
    insert(_POSTINGS)
    .from_select(
        ["transaction_id", "ledger_account_id", "amount"],
        select(
            _NEW_TXN.c.id,
            LedgerAccount.id,
            case(
                (LedgerAccount.account_id.is_(None), bindparam("counter_amount", type_=_MONEY)),
                else_=bindparam("amount", type_=_MONEY),
            ),
        )
        .select_from(_NEW_TXN.join(LedgerAccount, true()))
        .where(
            or_(
                LedgerAccount.account_id == bindparam("account_id"),
                and_(
                    LedgerAccount.id == bindparam("cached"), LedgerAccount.code == bindparam("code")
                ),
            )
        )
        .order_by(case((LedgerAccount.account_id.is_(None), 1), else_=0)),  # customer leg first
    )
    .add_cte(_NEW_BALANCE)
)


def _txn_row(txn: LedgerTransaction) -> dict[str, Any]:
    return {column.key: getattr(txn, column.key) for column in _TXN_TABLE.columns}


def _post_pair(
    session: Session,
    txn_id: str,
    account_id: str,
    counter: str,
    currency: str,
    amount: Decimal,
    now: datetime,
    txn_row: dict[str, Any] | None = None,
) -> None:
    """The two postings in one INSERT ... SELECT: the customer's leg by its account id, the
    counter-account's by its cached id, used only while its code still matches. With
    `txn_row` (PostgreSQL) the same statement inserts the transaction first."""
    code = f"{counter}:{currency}"
    cached = _system_ids.get((_db_key(session), code))
    if cached is None:
        cached = system_account_id(session, counter, currency, now)
    # Core, on the session's connection: the real row count (the transaction is flushed).
    params: dict[str, Any] = {
        "amount": amount,
        "counter_amount": -amount,
        "account_id": account_id,
        "cached": cached,
        "code": code,
    }
    if txn_row is None:
        statement: Any = _POST_PAIR
        params["txn_id"] = txn_id
    else:
        statement = _POST_TXN_AND_PAIR
        params.update({f"t_{key}": value for key, value in txn_row.items()})
        params.update(u_id=account_id, u_balance=txn_row["balance_after"], u_updated_at=now)
    inserted = (
        session.connection()
        .execute(statement, params, execution_options={"preserve_rowcount": True})
        .rowcount
    )
    if inserted == 2:
        return
    if inserted != 1:
        raise RuntimeError(
            f"transaction {txn_id}: expected 2 postings, the database wrote {inserted}"
        )
    customer_ledger_id(session, account_id)  # no ledger account: raises, nothing is posted
    # Only the customer's leg went in: the cached id was stale (an emptied test database).
    _system_ids.pop((_db_key(session), code), None)
    system_id = system_account_id(session, counter, currency, now)
    session.execute(
        insert(Posting).values(transaction_id=txn_id, ledger_account_id=system_id, amount=-amount)
    )


def balance_after(txn: LedgerTransaction) -> Decimal:
    """The customer balance after a customer transaction (system ones have none)."""
    if txn.balance_after is None:
        raise ValueError(f"transaction {txn.id} is a system transaction: no customer balance")
    return txn.balance_after


def transfer_system(
    uow: UnitOfWork,
    *,
    kind: str,
    reference: str,
    amount: Decimal,
    currency: str,
    from_account: str,
    to_account: str,
    description: str | None,
    now: datetime,
) -> LedgerTransaction | None:
    """Move `amount` between two system accounts, once per (kind, reference).

    System receivables carry the negative of what is owed (the mirror of the customer
    credit), so the amount leaves `from_account` as +amount and arrives in `to_account`
    as -amount. Returns None when this (kind, reference) was already posted; the caller
    holds the lock on the row the transfer belongs to, and a partial unique index backs it.
    """
    session = uow.session
    done = session.scalar(
        select(LedgerTransaction.id).where(
            LedgerTransaction.account_id.is_(None),
            LedgerTransaction.kind == kind,
            LedgerTransaction.reference == reference,
        )
    )
    if done is not None:
        return None
    txn = LedgerTransaction(
        id=new_id("txn"),
        account_id=None,
        kind=kind,
        reference=reference,
        amount=amount,
        currency=currency,
        balance_after=None,
        description=description,
        created_at=now,
    )
    session.add(txn)
    session.flush()
    session.add_all(
        [
            Posting(
                transaction_id=txn.id,
                ledger_account_id=system_account_id(session, from_account, currency, now),
                amount=amount,
            ),
            Posting(
                transaction_id=txn.id,
                ledger_account_id=system_account_id(session, to_account, currency, now),
                amount=-amount,
            ),
        ]
    )
    return txn


def _rearm_alert(account: Account, txn: LedgerTransaction) -> None:
    """The credit that lifts the balance back to the alert threshold re-arms the alert."""
    threshold = account.alert_threshold
    if (
        txn.amount > 0
        and account.alert_state == "sent"
        and threshold is not None
        and account.balance >= threshold
    ):
        account.alert_state = "armed"


def _apply_depletion_rule(
    uow: UnitOfWork, account: Account, txn: LedgerTransaction, now: datetime
) -> None:
    """At or below the floor after a debit: suspended (depleted). Above it after a credit: active.

    An operator's suspension (reason `admin`) is never lifted by money.
    """
    floor = get_settings().depletion_floor
    data = {
        "balance": format_amount(account.balance, account.currency),
        "currency": account.currency,
        "floor": format_amount(floor, account.currency),
        "transaction_id": txn.id,
        "at": isoformat(now),
    }
    if txn.amount < 0 and account.balance <= floor and account.status == "active":
        account.status = "suspended"
        account.suspension_reason = "depleted"
        events.record(uow, "account.depleted", account.id, data, now)
        extra = hooks.after_depletion(uow, account, txn, now)  # numbers: suspend (wiring.py)
        notices.depleted(uow, account, transaction_id=txn.id, floor=floor, now=now, **extra)
    elif (
        txn.amount > 0
        and account.balance > floor
        and account.status == "suspended"
        and account.suspension_reason == "depleted"
    ):
        account.status = "active"
        account.suspension_reason = None
        events.record(uow, "account.reactivated", account.id, data, now)


# Public for worker/ledger/bulk.py (many debits in one go): the same rule, not a copy.
apply_depletion_rule = _apply_depletion_rule


def reload_if_crossed(uow: UnitOfWork, account: Account, before: Decimal) -> None:
    """The debit that takes the balance below the auto-reload threshold reloads at once
    (after commit, on the urgent queue); already below, the sweep is the safety net."""
    threshold = account.auto_reload_threshold
    if (
        account.auto_reload_enabled
        and threshold is not None
        and before >= threshold > account.balance
    ):
        uow.enqueue(task_names.AUTO_RELOAD_RELOAD_NOW, account.id)
