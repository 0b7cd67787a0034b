"""Usage debits on real PostgreSQL (and the embedded SQLite): exact, idempotent, all-or-nothing."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from config import get_settings, reset_settings
from worker.accounts import service as accounts
from worker.db import migrate
from worker.db.session import dispose_engine, unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import (
    AccountSuspended,
    DomainError,
    InsufficientFunds,
    NotFound,
    ReferenceConflict,
    ValidationError,
)
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

# --- helpers -------------------------------------------------------------------------------------


def new_account(name: str = "Acme", **kwargs: Any) -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name=name, now=now(), **kwargs)["id"])


def credit(account_id: str, amount: str, reason: str = "test funds") -> dict[str, Any]:
    with unit_of_work() as uow:
        return adjustments.adjust(
            uow, account_id=account_id, amount=amount, reason=reason, now=now()
        )


def debit(
    account_id: object, amount: object, reference: object, description: object = None
) -> dict[str, Any]:

    with unit_of_work() as uow:
        return usage.debit(
            uow,
            account_id=account_id,
            amount=amount,
            reference=reference,
            description=description,
            now=now(),
        )


def funded(amount: str = "10") -> str:
    account_id = new_account()
    credit(account_id, amount)
    return account_id


def snapshot() -> dict[str, Any]:
    """Everything a refused operation must leave untouched."""
    with unit_of_work() as uow:
        session = uow.session
        counts = {
            table: session.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in (
                "ledger_transactions",
                "postings",
                "events",
                "mail_outbox",
                "ledger_accounts",
                "accounts",
            )
        }
        rows = session.execute(
            text(
                "SELECT id, balance, status, suspension_reason, updated_at "
                "FROM accounts ORDER BY id"
            )
        ).all()
        return {**counts, "accounts_state": [tuple(r) for r in rows]}


def account_row(account_id: str) -> Any:
    with unit_of_work() as uow:
        return uow.session.execute(
            text("SELECT balance, status, suspension_reason FROM accounts WHERE id = :id"),
            {"id": account_id},
        ).one()


def events_of(account_id: str, type_: str | None = None) -> list[Any]:
    sql = "SELECT type, data FROM events WHERE account_id = :id"
    if type_ is not None:
        sql += " AND type = :type"
    with unit_of_work() as uow:
        return list(
            uow.session.execute(
                text(sql + " ORDER BY occurred_at, id"), {"id": account_id, "type": type_}
            ).all()
        )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


# --- the happy path and idempotency --------------------------------------------------------------


def test_debit_result_per_contract() -> None:
    account_id = funded("10")
    result = debit(account_id, "5.7", "msg-1")
    assert result["account_id"] == account_id
    assert result["balance"] == "4.30"
    assert result["currency"] == "EUR"
    assert isinstance(result["transaction_id"], str) and result["transaction_id"]
    assert result["duplicate"] is False
    for key in ("balance", "amount"):
        assert isinstance(result[key], str)  # amounts are strings, never JSON numbers
    assert account_row(account_id).balance == Decimal("4.3")

    with unit_of_work() as uow:
        txn = uow.session.execute(
            text(
                "SELECT kind, reference, amount, balance_after, currency "
                "FROM ledger_transactions WHERE id = :id"
            ),
            {"id": result["transaction_id"]},
        ).one()
    assert tuple(txn) == ("usage_debit", "msg-1", Decimal("-5.7"), Decimal("4.3"), "EUR")


def test_repeat_reference_returns_first_result_and_moves_nothing() -> None:
    account_id = funded("10")
    first = debit(account_id, "1.5", "msg-1")
    debit(account_id, "2", "msg-2")
    before = snapshot()

    again = debit(account_id, "1.5", "msg-1")

    assert again["duplicate"] is True
    assert again["transaction_id"] == first["transaction_id"]
    assert again["balance"] == first["balance"] == "8.50"  # the FIRST result's balance
    assert again["account_id"] == account_id
    assert again["currency"] == "EUR"
    assert snapshot() == before
    assert account_row(account_id).balance == Decimal("6.5")


def test_repeat_after_the_money_is_gone_is_still_a_duplicate() -> None:
    account_id = funded("1")
    first = debit(account_id, "1", "msg-1")
    before = snapshot()
    again = debit(account_id, "1", "msg-1")
    assert again["duplicate"] is True
    assert again["transaction_id"] == first["transaction_id"]
    assert snapshot() == before


def test_same_reference_on_another_account_is_a_new_debit() -> None:
    a, b = funded("5"), funded("5")
    ra = debit(a, "1", "msg-1")
    rb = debit(b, "1", "msg-1")
    assert rb["duplicate"] is False
    assert rb["transaction_id"] != ra["transaction_id"]
    assert account_row(a).balance == account_row(b).balance == Decimal("4")


def test_reference_conflict_for_a_different_amount_writes_nothing() -> None:
    account_id = funded("10")
    debit(account_id, "1.5", "msg-1")
    before = snapshot()
    with pytest.raises(ReferenceConflict) as info:
        debit(account_id, "1.6", "msg-1")
    assert info.value.code == "reference_conflict"
    assert info.value.field == "reference"
    assert str(info.value).startswith("reference: ")
    assert snapshot() == before


def test_insufficient_funds_writes_nothing() -> None:
    account_id = funded("5")
    before = snapshot()
    with pytest.raises(InsufficientFunds) as info:
        debit(account_id, "5.000001", "msg-1")
    assert info.value.code == "insufficient_funds"
    assert info.value.field == "amount"
    assert snapshot() == before
    # Nothing remembered either: the same reference works once there is money.
    credit(account_id, "1")
    assert debit(account_id, "5.000001", "msg-1")["duplicate"] is False


def test_an_empty_account_refuses_any_debit() -> None:
    account_id = new_account()
    before = snapshot()
    with pytest.raises(InsufficientFunds):
        debit(account_id, "0.000001", "msg-1")
    assert snapshot() == before


BAD_AMOUNTS = ["abc", "1e400", "NaN", "Infinity", "-Infinity", 0.1, 5, "0", "-1", "1.1234567", ""]


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
def test_bad_amount_is_refused_by_name_and_writes_nothing(amount: object) -> None:
    account_id = funded("10")
    before = snapshot()
    with pytest.raises(ValidationError) as info:
        debit(account_id, amount, "msg-1")
    assert info.value.field == "amount"
    assert str(info.value).startswith("amount: ")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("kwargs", "field", "error"),
    [
        ({"account_id": "acc_does_not_exist"}, "account_id", NotFound),
        ({"account_id": ""}, "account_id", ValidationError),
        ({"account_id": None}, "account_id", ValidationError),
        ({"reference": ""}, "reference", ValidationError),
        ({"reference": "   "}, "reference", ValidationError),
        ({"reference": None}, "reference", ValidationError),
        ({"reference": 42}, "reference", ValidationError),
        ({"reference": "r" * 201}, "reference", ValidationError),
        ({"reference": "line\nbreak"}, "reference", ValidationError),
        ({"description": "d" * 501}, "description", ValidationError),
        ({"description": 42}, "description", ValidationError),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_bad_input_is_refused_by_name_and_writes_nothing(
    kwargs: dict[str, Any], field: str, error: type[DomainError]
) -> None:
    account_id = funded("10")
    args: dict[str, Any] = {
        "account_id": account_id,
        "amount": "1",
        "reference": "msg-1",
        "description": None,
    }
    args.update(kwargs)
    before = snapshot()
    with pytest.raises(error) as info:
        debit(**args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert snapshot() == before


def test_reference_of_200_characters_is_fine() -> None:
    account_id = funded("10")
    result = debit(account_id, "1", "r" * 200)
    assert result["duplicate"] is False
    assert debit(account_id, "1", "r" * 200)["duplicate"] is True


def test_distinct_numeric_references_are_never_merged() -> None:
    # 13-19 digit message ids are common (snowflake ids); ~1 in 10 is Luhn-valid by chance.
    # Redacting them would merge distinct references into one "[REDACTED]" key.
    account_id = funded("10")
    outcomes = []
    for reference in ("msg-4111111111111111", "msg-4242424242424242"):
        try:
            outcomes.append(debit(account_id, "1", reference))
        except ValidationError as exc:  # refusing a PAN-like reference is acceptable
            assert exc.field == "reference"
    assert all(r["duplicate"] is False for r in outcomes)
    assert len({r["transaction_id"] for r in outcomes}) == len(outcomes)
    assert account_row(account_id).balance == Decimal(10 - len(outcomes))


def test_pan_like_reference_is_refused_without_echo_and_writes_nothing() -> None:
    account_id = funded("10")
    before = snapshot()
    with pytest.raises(ValidationError) as info:
        debit(account_id, "1", "4242 4242 4242 4242")
    assert info.value.field == "reference"
    assert "4242" not in str(info.value)
    assert snapshot() == before


def test_non_luhn_numeric_references_are_distinct_debits() -> None:
    account_id = funded("10")
    first = debit(account_id, "1", "4111111111111112")
    second = debit(account_id, "1", "4242424242424241")
    assert first["duplicate"] is False and second["duplicate"] is False
    assert first["transaction_id"] != second["transaction_id"]
    assert account_row(account_id).balance == Decimal("8")
    with unit_of_work() as uow:
        stored = set(
            uow.session.scalars(
                text("SELECT reference FROM ledger_transactions WHERE kind = 'usage_debit'")
            )
        )
    assert stored == {"4111111111111112", "4242424242424241"}


def test_description_with_a_card_number_is_stored_redacted() -> None:
    account_id = funded("10")
    result = debit(account_id, "1", "msg-1", description="paid by 4111 1111 1111 1111 ok")
    with unit_of_work() as uow:
        stored = uow.session.scalar(
            text("SELECT description FROM ledger_transactions WHERE id = :id"),
            {"id": result["transaction_id"]},
        )
        dump = uow.session.scalar(
            text("SELECT string_agg(t::text, ' ') FROM ledger_transactions t")
        ) + uow.session.scalar(text("SELECT coalesce(string_agg(e::text, ' '), '') FROM events e"))
    assert stored == "paid by [REDACTED] ok"
    # The whole card number, with its spaces and dashes taken out (ids and timestamps may
    # contain "4111" by chance, so the prefix alone is not the thing to search).
    assert "4111111111111111" not in dump.replace(" ", "").replace("-", "")


def test_debit_through_the_celery_task() -> None:
    from worker.celery import app

    app.loader.import_default_modules()
    account_id = funded("10")
    task = app.tasks["balance.usage.debit"]
    result = task(account_id, "0.0057", "msg-1")
    assert result["balance"] == "9.9943"
    assert result["duplicate"] is False
    again = task(account_id, "0.0057", "msg-1")
    assert again["duplicate"] is True
    assert again["transaction_id"] == result["transaction_id"]
    before = snapshot()
    with pytest.raises(ValidationError) as info:
        task(account_id, 0.1, "msg-2")
    assert info.value.field == "amount"
    assert snapshot() == before


# --- concurrency on PostgreSQL -------------------------------------------------------------------


def _run_threads(count: int, body: Any) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = body(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_fifty_concurrent_copies_of_one_debit_move_money_once() -> None:
    account_id = funded("10")
    results = _run_threads(50, lambda _i: debit(account_id, "1.25", "msg-once"))

    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    assert Counter(r["duplicate"] for r in results) == {False: 1, True: 49}
    assert len({r["transaction_id"] for r in results}) == 1
    assert {r["balance"] for r in results} == {"8.75"}
    assert account_row(account_id).balance == Decimal("8.75")
    with unit_of_work() as uow:
        assert (
            uow.session.scalar(
                text("SELECT count(*) FROM ledger_transactions WHERE kind = 'usage_debit'")
            )
            == 1
        )
        assert ledger.audit(uow.session)["ok"]


def test_a_lock_wait_that_times_out_is_a_retryable_error_and_moves_nothing() -> None:
    """The lock and the look-up go in one psycopg pipeline (issue 16): a failure there still
    reaches DbTask as SQLAlchemy's OperationalError (its autoretry_for), nothing written."""
    from sqlalchemy.exc import OperationalError

    from worker.db.session import get_engine

    account_id = funded("10")
    with get_engine().connect() as holder:
        holder.execute(text("SELECT 1 FROM accounts WHERE id = :id FOR UPDATE"), {"id": account_id})
        with pytest.raises(OperationalError), unit_of_work() as uow:
            uow.session.execute(text("SET LOCAL lock_timeout = '100ms'"))
            usage.debit(uow, account_id=account_id, amount="1.25", reference="msg-1", now=now())
        holder.rollback()
    assert account_row(account_id).balance == Decimal("10")
    assert debit(account_id, "1.25", "msg-1")["duplicate"] is False


def test_concurrent_debits_never_overdraw() -> None:
    account_id = funded("5")
    results = _run_threads(60, lambda i: debit(account_id, "0.1", f"msg-{i}"))

    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, InsufficientFunds) for r in refused), refused[:3]
    assert len(refused) == 10
    assert account_row(account_id).balance == Decimal("0")
    with unit_of_work() as uow:
        assert ledger.audit(uow.session)["ok"]


def test_first_debits_on_many_accounts_at_once() -> None:
    # The usage revenue account does not exist yet: all of them race to create it.
    ids = [funded("1") for _ in range(10)]
    results = _run_threads(10, lambda i: debit(ids[i], "0.25", "msg-1"))
    assert [r for r in results if isinstance(r, Exception)] == []
    assert {r["balance"] for r in results} == {"0.75"}
    with unit_of_work() as uow:
        assert (
            uow.session.scalar(
                text("SELECT count(*) FROM ledger_accounts WHERE code = 'usage_revenue:EUR'")
            )
            == 1
        )
        assert ledger.audit(uow.session)["ok"]


# --- exact to the micro-unit, on PostgreSQL and on the embedded SQLite ---------------------------


def _thousand_small_debits(account_id: str) -> None:
    for i in range(1000):
        debit(account_id, "0.0057", f"msg-{i}")


def test_thousand_debits_of_0_0057_are_exactly_5_7_on_postgresql() -> None:
    account_id = funded("10")
    _thousand_small_debits(account_id)
    assert account_row(account_id).balance == Decimal("4.3")
    with unit_of_work() as uow:
        session = uow.session
        raw = session.scalar(
            text("SELECT balance::text FROM accounts WHERE id = :id"), {"id": account_id}
        )
        spent = session.scalar(
            text(
                "SELECT sum(p.amount)::text FROM postings p "
                "JOIN ledger_accounts la ON la.id = p.ledger_account_id "
                "WHERE la.code = 'usage_revenue:EUR'"
            )
        )
        report = ledger.audit(session)
    assert raw == "4.300000"
    assert spent == "5.700000"
    assert report["ok"], report


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The embedded default: no DATABASE_URL, a SQLite file under BALANCE_HOME."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("BALANCE_HOME", str(tmp_path))
    reset_settings()
    dispose_engine()
    assert get_settings().embedded
    migrate.upgrade()
    yield tmp_path
    dispose_engine()
    monkeypatch.undo()
    reset_settings()
    dispose_engine()


def test_thousand_debits_of_0_0057_are_exactly_5_7_on_embedded_sqlite(embedded: Path) -> None:
    account_id = funded("10")
    _thousand_small_debits(account_id)
    assert (embedded / "balance.db").exists()
    with unit_of_work() as uow:
        session = uow.session
        assert session.get_bind().dialect.name == "sqlite"
        assert accounts.get(session, account_id).balance == Decimal("4.3")
        raw, kind = session.execute(
            text("SELECT balance, typeof(balance) FROM accounts WHERE id = :id"),
            {"id": account_id},
        ).one()
        spent = session.scalar(
            text("SELECT sum(amount) FROM ledger_transactions WHERE kind = 'usage_debit'")
        )
        report = ledger.audit(session)
    assert kind == "integer"
    assert raw == 4_300_000  # integer micro-units
    assert spent == -5_700_000
    assert report["ok"], report
    assert report["transactions_checked"] == 1001
    # The same reference again is a duplicate on SQLite too.
    assert debit(account_id, "0.0057", "msg-0")["duplicate"] is True


# --- depletion and reactivation ------------------------------------------------------------------


def test_debit_to_exactly_zero_suspends_as_depleted_once() -> None:
    account_id = funded("2")
    first = debit(account_id, "1.99", "msg-1")
    assert first["balance"] == "0.01"
    assert tuple(account_row(account_id)) == (Decimal("0.01"), "active", None)
    assert events_of(account_id, "account.depleted") == []

    debit(account_id, "0.01", "msg-2")
    assert tuple(account_row(account_id)) == (Decimal("0"), "suspended", "depleted")
    depleted = events_of(account_id, "account.depleted")
    assert len(depleted) == 1
    assert depleted[0].data["balance"] == "0.00"
    assert depleted[0].data["currency"] == "EUR"

    # A repeat of the depleting debit does not deplete again.
    debit(account_id, "0.01", "msg-2")
    assert len(events_of(account_id, "account.depleted")) == 1


def test_credit_above_the_floor_reactivates() -> None:
    account_id = funded("1")
    debit(account_id, "1", "msg-1")
    assert account_row(account_id).status == "suspended"
    credit(account_id, "5")
    assert tuple(account_row(account_id)) == (Decimal("5"), "active", None)
    assert len(events_of(account_id, "account.reactivated")) == 1
    with unit_of_work() as uow:
        shown = accounts.view(accounts.get(uow.session, account_id))
    assert shown["status"] == "active"
    assert shown["balance"] == "5.00"


def test_depletion_floor_setting(env: pytest.MonkeyPatch) -> None:
    env.setenv("DEPLETION_FLOOR", "1")
    reset_settings()
    account_id = funded("2")
    debit(account_id, "0.9", "msg-1")  # 1.1 left: above the floor
    assert account_row(account_id).status == "active"
    debit(account_id, "0.6", "msg-2")  # 0.5 left: at or below the floor
    assert tuple(account_row(account_id)) == (Decimal("0.5"), "suspended", "depleted")
    assert len(events_of(account_id, "account.depleted")) == 1

    debit(account_id, "0.1", "msg-3")  # already suspended: no second event
    assert len(events_of(account_id, "account.depleted")) == 1

    credit(account_id, "0.6")  # exactly at the floor (1.0): still suspended
    assert tuple(account_row(account_id)) == (Decimal("1"), "suspended", "depleted")
    assert events_of(account_id, "account.reactivated") == []

    credit(account_id, "0.000001")  # above the floor
    assert tuple(account_row(account_id)) == (Decimal("1.000001"), "active", None)
    assert len(events_of(account_id, "account.reactivated")) == 1


def test_debit_leaving_exactly_the_floor_suspends(env: pytest.MonkeyPatch) -> None:
    env.setenv("DEPLETION_FLOOR", "1")
    reset_settings()
    account_id = funded("3")
    debit(account_id, "2", "msg-1")
    assert tuple(account_row(account_id)) == (Decimal("1"), "suspended", "depleted")


def _admin_suspend(account_id: str) -> None:
    with unit_of_work() as uow:
        uow.session.execute(
            text(
                "UPDATE accounts SET status = 'suspended', suspension_reason = 'admin' "
                "WHERE id = :id"
            ),
            {"id": account_id},
        )


def test_credit_does_not_lift_an_admin_suspension() -> None:
    account_id = funded("1")
    debit(account_id, "1", "msg-1")  # depleted
    _admin_suspend(account_id)
    credit(account_id, "50")
    assert tuple(account_row(account_id)) == (Decimal("50"), "suspended", "admin")
    assert events_of(account_id, "account.reactivated") == []


def test_depleting_debit_keeps_an_admin_suspension() -> None:
    """Issue 18 made usage on an operator-suspended account a refusal (`account_suspended`);
    a debit that still reaches it (an operator's negative adjustment) never turns the
    suspension into a depletion, and a credit never lifts it."""
    account_id = funded("1")
    _admin_suspend(account_id)
    with pytest.raises(AccountSuspended):
        debit(account_id, "1", "msg-1")
    assert tuple(account_row(account_id)) == (Decimal("1"), "suspended", "admin")
    credit(account_id, "-1")
    assert tuple(account_row(account_id)) == (Decimal("0"), "suspended", "admin")
    credit(account_id, "5")
    assert tuple(account_row(account_id)) == (Decimal("5"), "suspended", "admin")
