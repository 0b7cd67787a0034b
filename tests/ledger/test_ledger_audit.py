"""Double entry: every transaction balances, and the audit catches any tampering."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def balancectl() -> list[str]:
    script = Path(sys.executable).with_name("balancectl")
    if script.exists():
        return [str(script)]
    found = shutil.which("balancectl")
    return [found] if found else [sys.executable, "-m", "worker.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*balancectl(), *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def populate() -> list[str]:
    """A few accounts with credits, debits, a depletion and a reactivation."""
    ids = []
    with unit_of_work() as uow:
        for i, currency in enumerate(["EUR", "EUR", "JPY"]):
            ids.append(accounts.create(uow, name=f"a{i}", currency=currency, now=now())["id"])
    for account_id in ids:
        with unit_of_work() as uow:
            adjustments.adjust(uow, account_id=account_id, amount="100", reason="seed", now=now())
        for n in range(5):
            with unit_of_work() as uow:
                usage.debit(
                    uow, account_id=account_id, amount="0.0057", reference=f"m{n}", now=now()
                )
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=ids[0], amount="-99.9715", reason="drain", now=now())
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=ids[0], amount="1", reason="refill", now=now())
    return ids


def audit() -> dict[str, Any]:
    with unit_of_work() as uow:
        return ledger.audit(uow.session)


def test_every_transaction_has_two_postings_summing_to_zero() -> None:
    populate()
    with unit_of_work() as uow:
        rows = uow.session.execute(
            text(
                "SELECT t.id, t.amount, count(p.id), sum(p.amount), "
                "sum(CASE WHEN la.account_id = t.account_id THEN p.amount END), "
                "count(DISTINCT la.currency), min(la.currency), t.currency "
                "FROM ledger_transactions t "
                "JOIN postings p ON p.transaction_id = t.id "
                "JOIN ledger_accounts la ON la.id = p.ledger_account_id "
                "GROUP BY t.id, t.amount, t.currency"
            )
        ).all()
        total = uow.session.scalar(text("SELECT count(*) FROM ledger_transactions"))
    assert len(rows) == total == 3 * 6 + 2
    for txn_id, amount, legs, legs_sum, customer_leg, currencies, currency, txn_currency in rows:
        assert legs == 2, txn_id
        assert legs_sum == 0, txn_id
        assert customer_leg == amount, txn_id  # the customer's leg is the signed amount
        assert currencies == 1 and currency == txn_currency, txn_id


def test_a_stale_cached_counter_account_id_is_never_posted_to() -> None:
    """The counter-account id is cached per process; a database emptied and refilled (its
    ids restarted) must not send a leg to whatever row now has the old id."""
    ids = populate()
    with unit_of_work() as uow:
        session = uow.session
        usage_id = ledger.system_account_id(session, ledger.USAGE_REVENUE, "EUR", now())
        other = ledger.customer_ledger_id(session, ids[1])
        key = (str(session.get_bind().engine.url), f"{ledger.USAGE_REVENUE}:EUR")
    ledger._system_ids[key] = other  # stale: that id now belongs to another account
    with unit_of_work() as uow:
        usage.debit(uow, account_id=ids[0], amount="0.25", reference="stale", now=now())
    assert ledger._system_ids[key] == usage_id  # looked up again
    with unit_of_work() as uow:
        legs = uow.session.execute(
            text(
                "SELECT p.ledger_account_id, p.amount FROM postings p "
                "JOIN ledger_transactions t ON t.id = p.transaction_id "
                "WHERE t.reference = 'stale' ORDER BY p.id"
            )
        ).all()
        customer = ledger.customer_ledger_id(uow.session, ids[0])
    assert [(lid, amount) for lid, amount in legs] == [
        (customer, Decimal("-0.25")),
        (usage_id, Decimal("0.25")),
    ]
    assert audit()["ok"]


def test_cached_balance_equals_sum_of_postings() -> None:
    ids = populate()
    with unit_of_work() as uow:
        for account_id in ids:
            cached = accounts.get(uow.session, account_id).balance
            derived = uow.session.scalar(
                text(
                    "SELECT sum(p.amount) FROM postings p "
                    "JOIN ledger_accounts la ON la.id = p.ledger_account_id "
                    "WHERE la.account_id = :id"
                ),
                {"id": account_id},
            )
            assert cached == derived
    assert accounts_balance(ids[0]) == Decimal("1")
    assert accounts_balance(ids[2]) == Decimal("99.9715")


def accounts_balance(account_id: str) -> Decimal:
    with unit_of_work() as uow:
        return accounts.get(uow.session, account_id).balance


def test_audit_ok() -> None:
    ids = populate()
    report = audit()
    assert report["ok"] is True
    assert report["accounts_checked"] == len(ids)
    assert report["transactions_checked"] == 20
    assert report["mismatches"] == []
    assert report["unbalanced_transactions"] == []
    assert report["transactions_without_postings"] == 0


def test_audit_of_an_empty_ledger_is_ok() -> None:
    assert audit()["ok"] is True


def test_tampered_cached_balance_fails_the_audit_and_the_cli() -> None:
    ids = populate()
    ok = run_cli("audit", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    with unit_of_work() as uow:
        uow.session.execute(
            text("UPDATE accounts SET balance = balance + 0.000001 WHERE id = :id"), {"id": ids[1]}
        )
    report = audit()
    assert report["ok"] is False
    assert report["mismatches"] == [
        {"account_id": ids[1], "cached": "99.971501", "postings": "99.9715"}
    ]
    assert report["unbalanced_transactions"] == []

    failed = run_cli("audit", "--json")
    assert failed.returncode == 1
    document = json.loads(failed.stdout)  # exactly one JSON document
    assert document["ok"] is False
    assert document["mismatches"][0]["account_id"] == ids[1]
    assert failed.stderr.strip()
    assert "Traceback" not in failed.stderr

    human = run_cli("audit")
    assert human.returncode == 1


def test_tampered_posting_is_reported_as_unbalanced() -> None:
    ids = populate()
    with unit_of_work() as uow:
        txn_id, posting_id = uow.session.execute(
            text(
                "SELECT t.id, p.id FROM ledger_transactions t "
                "JOIN postings p ON p.transaction_id = t.id "
                "JOIN ledger_accounts la ON la.id = p.ledger_account_id "
                "WHERE t.account_id = :id AND la.account_id IS NULL "
                "ORDER BY t.created_at LIMIT 1"
            ),
            {"id": ids[2]},
        ).one()
        # Tamper the counter-account leg only: the customer's cached balance still agrees.
        uow.session.execute(
            text("UPDATE postings SET amount = amount - 1 WHERE id = :id"), {"id": posting_id}
        )
    report = audit()
    assert report["ok"] is False
    assert report["mismatches"] == []
    assert report["unbalanced_transactions"] == [
        {"transaction_id": txn_id, "currency": "JPY", "sum": "-1"}
    ]
    failed = run_cli("audit", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["unbalanced_transactions"][0]["transaction_id"] == txn_id


def test_tampered_customer_posting_is_both_a_mismatch_and_unbalanced() -> None:
    ids = populate()
    with unit_of_work() as uow:
        uow.session.execute(
            text(
                "UPDATE postings SET amount = amount + 0.5 WHERE id = ("
                " SELECT p.id FROM postings p JOIN ledger_accounts la"
                " ON la.id = p.ledger_account_id WHERE la.account_id = :id"
                " ORDER BY p.id LIMIT 1)"
            ),
            {"id": ids[0]},
        )
    report = audit()
    assert report["ok"] is False
    assert [m["account_id"] for m in report["mismatches"]] == [ids[0]]
    assert len(report["unbalanced_transactions"]) == 1


def test_transaction_without_postings_fails_the_audit() -> None:
    ids = populate()
    with unit_of_work() as uow:
        txn_id = uow.session.scalar(
            text(
                "SELECT id FROM ledger_transactions WHERE account_id = :id "
                "ORDER BY created_at DESC LIMIT 1"
            ),
            {"id": ids[1]},
        )
        uow.session.execute(text("DELETE FROM postings WHERE transaction_id = :t"), {"t": txn_id})
        # Keep the cached balance consistent so only the missing legs are wrong.
        uow.session.execute(
            text("UPDATE accounts SET balance = balance + 0.0057 WHERE id = :id"), {"id": ids[1]}
        )
    report = audit()
    assert report["ok"] is False
    assert report["mismatches"] == []
    assert report["transactions_without_postings"] == 1


def test_audit_task_records_an_event_when_it_fails() -> None:
    from worker.celery import app

    app.loader.import_default_modules()
    ids = populate()
    assert app.tasks["balance.ledger.audit"]()["ok"] is True
    with unit_of_work() as uow:
        uow.session.execute(text("UPDATE accounts SET balance = 0 WHERE id = :id"), {"id": ids[2]})
    report = app.tasks["balance.ledger.audit"]()
    assert report["ok"] is False
    with unit_of_work() as uow:
        failed = uow.session.scalar(
            text("SELECT count(*) FROM events WHERE type = 'ledger.audit_failed'")
        )
    assert failed == 1
