"""The ledger's read side: an account's transactions, system balances, and the audit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from worker.kernel import listing, validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import NotFound
from worker.kernel.money import format_amount
from worker.ledger.models import Account, LedgerAccount, LedgerTransaction, Posting

__all__ = ["AuditReport", "audit", "list_transactions", "system_balances", "transaction_view"]


def system_balances(session: Session, prefix: str) -> dict[tuple[str, str], Decimal]:
    """Sum of postings per system account whose code starts with `prefix` ({(code, cur): sum})."""
    rows = session.execute(
        select(LedgerAccount.code, LedgerAccount.currency, func.sum(Posting.amount))
        .join(Posting, Posting.ledger_account_id == LedgerAccount.id)
        .where(LedgerAccount.account_id.is_(None), LedgerAccount.code.startswith(prefix))
        .group_by(LedgerAccount.code, LedgerAccount.currency)
    ).all()
    return {(code, cur): total for code, cur, total in rows}


def transaction_view(
    txn: LedgerTransaction, postings: list[Posting] | None = None
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": txn.id,
        "kind": txn.kind,
        "reference": txn.reference,
        "amount": format_amount(txn.amount, txn.currency),
        "currency": txn.currency,
        "balance_after": (
            None if txn.balance_after is None else format_amount(txn.balance_after, txn.currency)
        ),
        "description": txn.description,
        "created_at": isoformat(txn.created_at),
    }
    if postings is not None:
        view["postings"] = [
            {
                "ledger_account": p.ledger_account.code,
                "amount": format_amount(p.amount, txn.currency),
            }
            for p in postings
        ]
    return view


def list_transactions(
    session: Session,
    account_id: str,
    limit: object = None,
    since: object = None,
    until: object = None,
) -> list[dict[str, Any]]:
    """The account's transactions, oldest first, each with its postings.

    `limit`: keep the newest N (still printed oldest first); `since` (inclusive) / `until`
    (exclusive): ISO-8601 with offset (worker/kernel/listing.py; ValidationError naming the
    field). Reads ix_ledger_txn_account_created from the newest end when limited."""
    span = listing.window(limit, since, until)
    account_id = validation.identifier(account_id, "account_id")
    if session.get(Account, account_id) is None:
        raise NotFound("account_id", f"no account {account_id[:60]!r}")
    query = select(LedgerTransaction).where(LedgerTransaction.account_id == account_id)
    if span.since is not None:
        query = query.where(LedgerTransaction.created_at >= span.since)
    if span.until is not None:
        query = query.where(LedgerTransaction.created_at < span.until)
    if span.limit is not None:
        newest = query.order_by(
            LedgerTransaction.created_at.desc(), LedgerTransaction.id.desc()
        ).limit(span.limit)
        txns = list(reversed(session.scalars(newest).all()))
    else:
        txns = list(
            session.scalars(
                query.order_by(LedgerTransaction.created_at, LedgerTransaction.id)
            ).all()
        )
    ids = [t.id for t in txns]
    by_txn: dict[str, list[Posting]] = {i: [] for i in ids}
    if ids:
        for posting in session.scalars(
            select(Posting).where(Posting.transaction_id.in_(ids)).order_by(Posting.id)
        ):
            by_txn[posting.transaction_id].append(posting)
    return [transaction_view(t, by_txn[t.id]) for t in txns]


class AuditReport(TypedDict):
    """The ledger's proof: `ok` when every cached balance equals its postings, every
    transaction sums to zero per currency and none has no postings; offenders listed."""

    ok: bool
    accounts_checked: int
    transactions_checked: int
    mismatches: list[dict[str, str]]
    unbalanced_transactions: list[dict[str, str]]
    transactions_without_postings: int


def audit(session: Session, limit: int = 1000) -> AuditReport:
    """Prove cached balance == sum of postings per account, and every transaction sums to 0.

    All in SQL (no account is loaded into Python); up to `limit` offenders are listed.
    """
    sums = (
        select(Posting.ledger_account_id, func.sum(Posting.amount).label("total"))
        .group_by(Posting.ledger_account_id)
        .subquery()
    )
    derived = func.coalesce(sums.c.total, Decimal(0))
    rows = session.execute(
        select(Account.id, Account.currency, Account.balance, derived, LedgerAccount.id)
        .outerjoin(LedgerAccount, LedgerAccount.account_id == Account.id)
        .outerjoin(sums, sums.c.ledger_account_id == LedgerAccount.id)
        .where(or_(Account.balance != derived, LedgerAccount.id.is_(None)))
        .order_by(Account.id)
        .limit(limit)
    ).all()
    mismatches = [
        {
            "account_id": account_id,
            "cached": format_amount(cached, currency),
            "postings": format_amount(total, currency),
            **({"problem": "no ledger account"} if ledger_id is None else {}),
        }
        for account_id, currency, cached, total, ledger_id in rows
    ]
    accounts_checked = session.scalar(select(func.count()).select_from(Account)) or 0
    unbalanced_rows = session.execute(
        select(Posting.transaction_id, LedgerAccount.currency, func.sum(Posting.amount))
        .join(LedgerAccount, LedgerAccount.id == Posting.ledger_account_id)
        .group_by(Posting.transaction_id, LedgerAccount.currency)
        .having(func.sum(Posting.amount) != Decimal(0))
    ).all()
    unbalanced = [
        {"transaction_id": t, "currency": c, "sum": format_amount(s, c)}
        for t, c, s in unbalanced_rows
    ]
    orphan_count = (
        session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(
                ~select(Posting.id).where(Posting.transaction_id == LedgerTransaction.id).exists()
            )
        )
        or 0
    )
    transactions = session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0
    return {
        "ok": not mismatches and not unbalanced and orphan_count == 0,
        "accounts_checked": accounts_checked,
        "transactions_checked": transactions,
        "mismatches": mismatches,
        "unbalanced_transactions": unbalanced,
        "transactions_without_postings": orphan_count,
    }
