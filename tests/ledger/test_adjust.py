"""Manual adjustments: credit or debit against the adjustments account, reason required."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import InsufficientFunds, NotFound, ReferenceConflict, ValidationError
from worker.ledger import adjustments
from worker.ledger import service as ledger

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def new_account(**kwargs: Any) -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name="Acme", now=now(), **kwargs)["id"])


def adjust(account_id: object, amount: object, reason: object, **kwargs: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return adjustments.adjust(
            uow, account_id=account_id, amount=amount, reason=reason, now=now(), **kwargs
        )


def snapshot() -> dict[str, Any]:
    with unit_of_work() as uow:
        session = uow.session
        counts = {
            table: session.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("ledger_transactions", "postings", "events", "ledger_accounts")
        }
        rows = session.execute(
            text("SELECT id, balance, status, updated_at FROM accounts ORDER BY id")
        ).all()
        return {**counts, "accounts": [tuple(r) for r in rows]}


def postings_of(transaction_id: str) -> list[tuple[str, Decimal]]:
    with unit_of_work() as uow:
        rows = uow.session.execute(
            text(
                "SELECT la.code, p.amount FROM postings p "
                "JOIN ledger_accounts la ON la.id = p.ledger_account_id "
                "WHERE p.transaction_id = :id ORDER BY p.id"
            ),
            {"id": transaction_id},
        ).all()
    return [(code, amount) for code, amount in rows]


def balance(account_id: str) -> Decimal:
    with unit_of_work() as uow:
        return accounts.get(uow.session, account_id).balance


def test_positive_adjustment_credits_against_adjustments_account() -> None:
    account_id = new_account()
    result = adjust(account_id, "25.5", "goodwill for outage")
    assert result["account_id"] == account_id
    assert result["balance"] == "25.50"
    assert result["currency"] == "EUR"
    assert isinstance(result["transaction_id"], str)
    assert balance(account_id) == Decimal("25.5")
    assert postings_of(result["transaction_id"]) == [
        (f"customer:{account_id}", Decimal("25.5")),
        ("adjustments:EUR", Decimal("-25.5")),
    ]


def test_negative_adjustment_debits() -> None:
    account_id = new_account()
    adjust(account_id, "10", "seed")
    result = adjust(account_id, "-4.25", "correcting a double credit")
    assert result["balance"] == "5.75"
    assert result["amount"] == "-4.25"
    assert balance(account_id) == Decimal("5.75")
    assert postings_of(result["transaction_id"]) == [
        (f"customer:{account_id}", Decimal("-4.25")),
        ("adjustments:EUR", Decimal("4.25")),
    ]


def test_adjustments_account_follows_the_account_currency() -> None:
    account_id = new_account(currency="JPY")
    result = adjust(account_id, "1500", "welcome credit")
    assert result["balance"] == "1500"
    assert result["currency"] == "JPY"
    assert postings_of(result["transaction_id"])[1] == ("adjustments:JPY", Decimal("-1500"))


def test_adjustment_below_zero_is_insufficient_funds_and_writes_nothing() -> None:
    account_id = new_account()
    adjust(account_id, "3", "seed")
    before = snapshot()
    with pytest.raises(InsufficientFunds) as info:
        adjust(account_id, "-3.000001", "too much")
    assert info.value.code == "insufficient_funds"
    assert info.value.field == "amount"
    assert snapshot() == before
    # Down to exactly zero is allowed (and depletes).
    assert adjust(account_id, "-3", "close out")["balance"] == "0.00"


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_reason_is_required(reason: object) -> None:
    account_id = new_account()
    before = snapshot()
    with pytest.raises(ValidationError) as info:
        adjust(account_id, "5", reason)
    assert info.value.field == "reason"
    assert str(info.value).startswith("reason: ")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("amount", "reason", "account", "field", "error"),
    [
        ("abc", "r", None, "amount", ValidationError),
        ("1e400", "r", None, "amount", ValidationError),
        ("NaN", "r", None, "amount", ValidationError),
        (0.1, "r", None, "amount", ValidationError),
        ("0", "r", None, "amount", ValidationError),
        ("1.1234567", "r", None, "amount", ValidationError),
        ("5", "x" * 501, None, "reason", ValidationError),
        ("5", 7, None, "reason", ValidationError),
        ("5", "r", "acc_missing", "account_id", NotFound),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_bad_input_is_refused_by_name_and_writes_nothing(
    amount: object, reason: object, account: str | None, field: str, error: type[Exception]
) -> None:
    account_id = new_account()
    before = snapshot()
    with pytest.raises(error) as info:
        adjust(account or account_id, amount, reason)
    assert getattr(info.value, "field", None) == field
    assert snapshot() == before


def test_reason_is_stored_and_redacted() -> None:
    account_id = new_account()
    result = adjust(account_id, "5", "  refund for card 5555-5555-5555-4444 charge  ")
    assert result["reason"] == "refund for card [REDACTED] charge"
    with unit_of_work() as uow:
        stored = uow.session.scalar(
            text("SELECT description FROM ledger_transactions WHERE id = :id"),
            {"id": result["transaction_id"]},
        )
        event_text = uow.session.scalar(text("SELECT string_agg(data::text, ' ') FROM events"))
    assert stored == "refund for card [REDACTED] charge"
    assert "5555" not in event_text
    with unit_of_work() as uow:
        view = ledger.list_transactions(uow.session, account_id)
    assert view[0]["description"] == "refund for card [REDACTED] charge"


def test_balance_adjusted_event_is_written() -> None:
    account_id = new_account()
    result = adjust(account_id, "7.5", "goodwill")
    with unit_of_work() as uow:
        rows = uow.session.execute(
            text("SELECT type, account_id, data FROM events ORDER BY occurred_at")
        ).all()
    adjusted = [r for r in rows if r.type == "balance.adjusted"]
    assert len(adjusted) == 1
    assert adjusted[0].account_id == account_id
    data = adjusted[0].data
    assert data["amount"] == "7.50"
    assert data["balance"] == "7.50"
    assert data["currency"] == "EUR"
    assert data["reason"] == "goodwill"
    assert data["transaction_id"] == result["transaction_id"]


def test_same_reference_twice_is_one_transaction() -> None:
    account_id = new_account()
    first = adjust(account_id, "5", "goodwill", reference="ticket-123")
    before = snapshot()
    again = adjust(account_id, "5", "goodwill", reference="ticket-123")
    assert again["transaction_id"] == first["transaction_id"]
    assert again["balance"] == first["balance"] == "5.00"
    assert again["duplicate"] is True
    assert snapshot() == before
    assert balance(account_id) == Decimal("5")
    with pytest.raises(ReferenceConflict) as info:
        adjust(account_id, "6", "goodwill", reference="ticket-123")
    assert info.value.field == "reference"
    assert snapshot() == before


def test_adjust_task_per_contract() -> None:
    from worker.celery import app

    app.loader.import_default_modules()
    account_id = new_account()
    task = app.tasks["balance.ledger.adjust"]
    result = task(account_id, "10", "goodwill")
    assert {"account_id", "balance", "currency", "transaction_id"} <= set(result)
    assert result["balance"] == "10.00"
    result = task(account_id, "-2.5", "correction")
    assert result["balance"] == "7.50"
    with pytest.raises(InsufficientFunds):
        task(account_id, "-8", "too much")
    with pytest.raises(ValidationError) as info:
        task(account_id, "5", "")
    assert info.value.field == "reason"
    with unit_of_work() as uow:
        assert ledger.audit(uow.session)["ok"]
    assert balance(account_id) == Decimal("7.5")
