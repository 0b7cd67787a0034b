"""Every amount and threshold, on every path, in the exact grammar (issue 11, item 1).

`balancectl usage debit ID " 5" --reference r1` used to debit 5. Now white space around the
digits, a trailing newline, a tab or a non-ASCII digit is refused naming the field on every
command and task that takes an amount or a threshold, and nothing is written: no ledger
row, no charge, no event, no setting changed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from tests.cli.test_cli import check_refusal, run
from worker.accounts import service as accounts
from worker.cli import app as cli
from worker.db.session import get_engine, unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import ValidationError
from worker.ledger import adjustments
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

BAD = [" 5", "5 ", "5\n", "\t5", "5\r\n", "\u00a05", "\u0665", "\uff15"]


def _account() -> str:
    """An account with 100.00 and a default card."""
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(uow, name="Grammar", emails=["a@example.com"], now=now())["id"]
        )
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="100", reason="funds", now=now())
    with unit_of_work() as uow:
        payment_methods.add(
            uow, account_id=account_id, psp="braintree", nonce="fake-valid-visa-nonce", now=now()
        )
    return account_id


def _snapshot() -> dict[str, Any]:
    """Every table's rows, as text: equal snapshots mean nothing was written."""
    engine = get_engine()
    tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")
    with engine.connect() as conn:
        return {
            t: sorted(str(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {t}")))
            for t in tables
        }


def _commands(account_id: str, amount: str) -> list[list[str]]:
    return [
        ["usage", "debit", account_id, amount, "--reference", "r1"],
        ["adjust", account_id, amount, "--reason", "goodwill"],
        ["top-up", account_id, amount],
        ["auto-reload", "set", account_id, "--threshold", amount, "--amount", "20"],
        ["auto-reload", "set", account_id, "--threshold", "10", "--amount", amount],
        ["alerts", "set", account_id, "--threshold", amount],
    ]


FIELDS = ["amount", "amount", "amount", "threshold", "amount", "threshold"]


def test_the_reported_command_is_refused_naming_amount() -> None:
    account_id = _account()
    before = _snapshot()
    for amount in (" 5", "5 "):
        result = run("usage", "debit", account_id, amount, "--reference", "r1", "--json")
        error = check_refusal(result, "amount", "invalid")
        assert "white space" in error["message"]
    assert _snapshot() == before


@pytest.mark.parametrize("amount", BAD)
def test_every_amount_command_refuses_it_and_writes_nothing(amount: str) -> None:
    account_id = _account()
    before = _snapshot()
    runner = CliRunner()
    for args, field in zip(_commands(account_id, amount), FIELDS, strict=True):
        result = runner.invoke(cli, [*args, "--json"])
        assert result.exit_code == 1, (args, result.output)
        error = json.loads(result.stdout)["error"]
        assert (error["field"], error["code"]) == (field, "invalid"), (args, error)
        assert result.stderr.startswith(f"error: {field}: "), result.stderr
    assert _snapshot() == before


def test_the_same_commands_with_the_exact_amount_succeed() -> None:
    """The refusals above were the grammar's: the exact strings are accepted."""
    account_id = _account()
    runner = CliRunner()
    for args in _commands(account_id, "5"):
        result = runner.invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, (args, result.output)


def _tasks() -> dict[str, Any]:
    from worker.celery import app

    app.loader.import_default_modules()
    return dict(app.tasks)


@pytest.mark.parametrize("amount", BAD)
def test_every_amount_task_refuses_it_and_writes_nothing(amount: str) -> None:
    account_id = _account()
    tasks = _tasks()
    before = _snapshot()
    calls = [
        ("balance.usage.debit", (account_id, amount, "r1"), {"description": "sms"}),
        ("balance.ledger.adjust", (account_id, amount, "goodwill"), {"reference": "a1"}),
        ("balance.payments.top_up", (account_id, amount), {"idempotency_key": "k1"}),
    ]
    for name, args, kwargs in calls:
        with pytest.raises(ValidationError) as info:
            tasks[name](*args, **kwargs)
        assert info.value.field == "amount", (name, str(info.value))
    assert _snapshot() == before
    # The exact amount goes through the same tasks.
    for name, args, kwargs in calls:
        assert isinstance(tasks[name](args[0], "5", *args[2:], **kwargs), dict)


def test_a_credit_beyond_the_largest_storable_balance_is_refused_not_a_database_error() -> None:
    """Found by the task fuzz: "99999999999999.999999" is a valid amount, but added to a
    balance it passed NUMERIC(20,6) and PostgreSQL refused the row (numeric field overflow)."""
    account_id = _account()  # 100.00 and a card
    tasks = _tasks()
    before = _snapshot()
    for name, args, kwargs in [
        ("balance.ledger.adjust", (account_id, "99999999999999.999999", "x"), {}),
        ("balance.payments.top_up", (account_id, "99999999999999.99"), {"idempotency_key": "k"}),
    ]:
        with pytest.raises(ValidationError) as info:
            tasks[name](*args, **kwargs)
        assert info.value.field == "amount"
        assert "largest amount" in info.value.message
    assert _snapshot() == before  # the top-up never reached the PSP: no charge row
    # Up to the limit is fine.
    assert tasks["balance.ledger.adjust"](account_id, "99999999999899.999999", "x")["balance"] == (
        "99999999999999.999999"
    )
