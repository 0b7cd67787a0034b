"""Batched usage debits (`balance.usage.debit_many`, issue 16; CONTRACT.md "Batched usage
debits"): up to 1,000 debits in one message and one database transaction.

Each debit is judged alone with exactly the rules of `usage.debit` (worker/usage/service.py):
the same field checks in the same order, `not_found` for an unknown account, a repeat of
(account, reference) is `duplicate` with the first result (or `reference_conflict` when the
amount differs), `insufficient_funds` below zero, depletion at the floor, the on-debit
auto-reload at the crossing, card numbers redacted in descriptions. One refused debit never
refuses the others. Debits of one account apply in list order, as if sent one after the
other; the results come back in input order.

Why it is fast: the accounts are locked once each in one statement (in id order: two
batches never deadlock), existing references are found in one query, and the accepted
debits are written with one INSERT per table and one UPDATE batch (worker/ledger/bulk.py).
The whole message commits once, so a redelivered message finds every debit it made and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.kernel import validation
from worker.kernel.errors import (
    AccountSuspended,
    DomainError,
    InsufficientFunds,
    NotFound,
    ReferenceConflict,
    ValidationError,
)
from worker.kernel.money import format_amount, parse_amount
from worker.kernel.redaction import redact
from worker.ledger import bulk
from worker.ledger import service as ledger
from worker.usage.service import KIND

MAX_DEBITS = 1000
MAX_ECHO = 200  # an account id longer than this is no id of ours: not echoed back
FIELDS = frozenset({"account_id", "amount", "reference", "description"})


@dataclass(frozen=True)
class _Parsed:
    account_id: str
    amount: Decimal
    reference: str
    description: str | None


def _parse(item: object) -> _Parsed:
    """One debit's fields, checked in the order `usage.debit` checks them (amount,
    reference, description, account id), or the DomainError `debit` would raise."""
    if not isinstance(item, dict):
        raise ValidationError(
            "debits", "each debit must be an object {account_id, amount, reference}"
        )
    for key in item:
        if key not in FIELDS:
            shown = (redact(key) or "")[:40] if isinstance(key, str) else repr(key)[:40]
            raise ValidationError(str(shown), "is not a debit field")
    amount = parse_amount(item.get("amount"), "amount")
    reference = validation.reference(item.get("reference"))
    description = validation.text(
        item.get("description"), "description", max_length=500, required=False
    )
    account_id = validation.identifier(item.get("account_id"), "account_id")
    return _Parsed(account_id, amount, reference, description)


def _account_echo(value: object) -> str:
    account_id = validation.identifier(value, "account_id")
    if len(account_id) > MAX_ECHO:
        raise ValidationError("account_id", "too long to echo")
    return validation.refuse_pan(account_id, "account_id")


def _echo(value: object, check: Callable[[object], str]) -> str | None:
    """`value` as the caller's own key for a result, or None when it is no valid key: a card
    number or a control character is never echoed (PCI; the error message redacts it too)."""
    try:
        return check(value)
    except DomainError:
        return None


def _refused(
    error: DomainError, given: tuple[object, object], balance: str | None, currency: str | None
) -> dict[str, Any]:
    """A refusal carrying the debit's `account_id` and `reference` whenever each is itself a
    valid value (CONTRACT.md: each result carries them, so callers match results by
    reference even when another field, e.g. the amount, was refused)."""
    account_id, reference = given
    return {
        "account_id": _echo(account_id, _account_echo),
        "reference": _echo(reference, validation.reference),
        "status": "refused",
        "balance": balance,
        "currency": currency,
        "transaction_id": None,
        "error": error.as_dict(),
    }


def _done(
    parsed: _Parsed, status: str, txn_id: str, balance_after: Decimal, currency: str
) -> dict[str, Any]:
    return {
        "account_id": parsed.account_id,
        "reference": parsed.reference,
        "status": status,
        "balance": format_amount(balance_after, currency),
        "currency": currency,
        "transaction_id": txn_id,
        "error": None,
    }


def check_list(debits: object) -> list[Any]:
    """The message itself: a list of 1 to MAX_DEBITS debits, or ValidationError naming
    `debits` (the whole message is refused, nothing written)."""
    if not isinstance(debits, list | tuple):
        raise ValidationError("debits", "must be a list of debits")
    if not debits:
        raise ValidationError("debits", "must hold at least one debit")
    if len(debits) > MAX_DEBITS:
        raise ValidationError("debits", f"holds {len(debits)} debits; at most {MAX_DEBITS}")
    return list(debits)


def debit_many(uow: UnitOfWork, *, debits: object, now: datetime) -> dict[str, Any]:
    """Apply a list of debits `{account_id, amount, reference, description?}` (amounts
    decimal strings, rules of `usage.debit`), each judged alone, in one transaction.

    Returns `{"results": [...], "ok": n, "duplicate": n, "refused": n}`; one result per
    input, same order: `{account_id, reference, status: ok/duplicate/refused, balance,
    currency, transaction_id, error: {code, field, message} or null}`. `balance` is the
    balance right after the debit (a duplicate: after the first one, as `debit` returns
    it; refused: the balance it was judged against, null for an unknown account).
    Raises ValidationError naming `debits` when the list itself is malformed (not a list,
    empty, more than 1,000)."""
    items = check_list(debits)
    parsed: list[_Parsed | tuple[DomainError, tuple[object, object]]] = []
    for item in items:
        try:
            parsed.append(_parse(item))
        except DomainError as exc:
            given = (
                (item.get("account_id"), item.get("reference"))
                if isinstance(item, dict)
                else (None, None)
            )
            parsed.append((exc, given))
    valid = [p for p in parsed if isinstance(p, _Parsed)]
    session = uow.session
    locked = bulk.lock_accounts(session, [p.account_id for p in valid])
    seen = bulk.find_transactions(
        session, KIND, [(p.account_id, p.reference) for p in valid if p.account_id in locked]
    )
    # (account, reference) -> (transaction id, signed amount, balance after): existing rows
    # and the debits this batch makes, so a repeat inside the list is a duplicate too.
    first: dict[tuple[str, str], tuple[str, Decimal, Decimal]] = {
        key: (row.id, row.amount, row.balance_after) for key, row in seen.items()
    }
    accepted: list[bulk.Debit] = []
    results: list[dict[str, Any]] = []
    counts = {"ok": 0, "duplicate": 0, "refused": 0}
    for entry in parsed:
        if not isinstance(entry, _Parsed):
            results.append(_refused(entry[0], entry[1], None, None))
            counts["refused"] += 1
            continue
        result = _judge(entry, locked, first, accepted)
        counts[result["status"]] += 1
        results.append(result)
    bulk.post_many(uow, locked, accepted, counter=ledger.USAGE_REVENUE, now=now)
    return {"results": results, **counts}


def _judge(
    p: _Parsed,
    locked: dict[str, bulk.LockedAccount],
    first: dict[tuple[str, str], tuple[str, Decimal, Decimal]],
    accepted: list[bulk.Debit],
) -> dict[str, Any]:
    """One debit against the running state: `debit`'s checks after the field checks."""
    account = locked.get(p.account_id)
    if account is None:
        return _refused(
            NotFound("account_id", f"no account {p.account_id[:60]!r}"),
            (p.account_id, p.reference),
            None,
            None,
        )
    currency = account.currency
    shown = format_amount(account.balance, currency)
    key = (p.account_id, p.reference)
    earlier = first.get(key)
    if earlier is not None:
        txn_id, signed, balance_after = earlier
        if signed != -p.amount:
            error = ReferenceConflict(
                "reference",
                f"{p.reference!r} was already used for a debit of "
                f"{format_amount(-signed, currency)}, not {format_amount(p.amount, currency)}",
            )
            return _refused(error, (p.account_id, p.reference), shown, currency)
        return _done(p, "duplicate", txn_id, balance_after, currency)
    if account.suspension_reason == "admin":  # as `usage.debit` (issue 18)
        suspended = AccountSuspended(
            "account_id", f"account {p.account_id} is suspended by an operator: no usage is debited"
        )
        return _refused(suspended, (p.account_id, p.reference), shown, currency)
    if account.balance - p.amount < 0:
        refusal = InsufficientFunds(
            "amount",
            f"debit of {format_amount(p.amount, currency)} would take the balance "
            f"{shown} {currency} below zero",
        )
        return _refused(refusal, (p.account_id, p.reference), shown, currency)
    after = account.balance - p.amount
    txn_id = new_id("txn")
    accepted.append(
        bulk.Debit(
            transaction_id=txn_id,
            account_id=p.account_id,
            kind=KIND,
            reference=p.reference,
            amount=p.amount,
            balance_after=after,
            description=p.description,
        )
    )
    first[key] = (txn_id, -p.amount, after)
    account.balance = after  # what the account's next debit in the list is judged against
    return _done(p, "ok", txn_id, after, currency)
