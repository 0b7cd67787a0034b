"""The operator commands through balancectl (in-process, typer's runner): `--json` prints the
one JSON document the contract names, without it lists are tables; refusals exit 1 naming
the field; `ledger` / `charges` windows (`--limit` keeps the newest N, oldest first)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from worker.accounts import service as accounts
from worker.charges import top_up as top_ups
from worker.cli import app
from worker.db.session import unit_of_work
from worker.ledger import adjustments
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.integration
runner = CliRunner()
T = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def ok(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)  # exactly one document


def refused(field: str, code: str, *args: str) -> None:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.stdout
    assert json.loads(result.stdout)["error"]["field"] == field
    assert json.loads(result.stdout)["error"]["code"] == code
    assert field in result.stderr


def _account(name: str, **extra: Any) -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name=name, now=T, **extra)["id"])


def test_list_update_suspend_resume_through_the_cli() -> None:
    created = ok(
        "accounts",
        "create",
        "--name",
        "Acme",
        "--company",
        "Acme KK",
        "--finance-email",
        "fin@acme.example",
    )
    assert (created["company"], created["finance_email"]) == ("Acme KK", "fin@acme.example")
    other = _account("Other")
    listed = ok("accounts", "list")
    assert [a["id"] for a in listed] == sorted([created["id"], other])
    assert [a["id"] for a in ok("accounts", "list", "--search", "acme kk")] == [created["id"]]
    page = ok("accounts", "list", "--limit", "1")
    assert len(page) == 1
    [second] = ok("accounts", "list", "--limit", "1", "--after", page[0]["id"])
    assert [page[0]["id"], second["id"]] == sorted([created["id"], other])

    updated = ok(
        "accounts",
        "update",
        created["id"],
        "--name",
        "Acme Two",
        "--email",
        "a@acme.example",
        "--email",
        "b@acme.example",
        "--company",
        "",
    )
    assert updated["name"] == "Acme Two"
    assert updated["emails"] == ["a@acme.example", "b@acme.example"]
    assert updated["company"] is None
    assert updated["finance_email"] == "fin@acme.example"  # not given: unchanged

    suspended = ok("accounts", "suspend", created["id"], "--reason", "fraud review")
    assert (suspended["status"], suspended["suspension_reason"]) == ("suspended", "admin")
    assert [a["id"] for a in ok("accounts", "list", "--status", "suspended")] == [created["id"]]
    ok("adjust", created["id"], "10", "--reason", "credit")
    refused(
        "account_id", "account_suspended", "usage", "debit", created["id"], "1", "--reference", "r1"
    )
    shown = ok("accounts", "show", created["id"])
    assert (shown["status"], shown["balance"]) == ("suspended", "10.00")
    resumed = ok("accounts", "resume", created["id"])
    assert (resumed["status"], resumed["suspension_reason"]) == ("active", None)
    assert ok("usage", "debit", created["id"], "1", "--reference", "r1")["balance"] == "9.00"
    runway = ok("accounts", "show", created["id"])["runway"]
    assert runway["spend"] == "1.00"
    assert runway["days_left"] == 63  # 9 / (1/7)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["accounts", "list", "--status", "gone"], "status"),
        (["accounts", "list", "--limit", "x"], "limit"),
        (["accounts", "list", "--limit", "0"], "limit"),
        (["accounts", "list", "--limit", " 5"], "limit"),  # issue fixred 5: exact digits
        (["accounts", "list", "--limit", "5 "], "limit"),
        (["accounts", "list", "--limit", "\u0665"], "limit"),
        (["ledger", "ACC", "--limit", " 5"], "limit"),
        (["ledger", "ACC", "--limit", "5\n"], "limit"),
        (["charges", "ACC", "--limit", " 5"], "limit"),
        (["accounts", "update", "acc_missing", "--name", "x"], "account_id"),
        (["ledger", "ACC", "--limit", "-1"], "limit"),
        (["ledger", "ACC", "--since", "2026-11-20"], "since"),
        (["charges", "ACC", "--until", "yesterday"], "until"),
        (
            [
                "charges",
                "ACC",
                "--since",
                "2026-11-20T10:00:00+00:00",
                "--until",
                "2026-11-20T09:00:00+00:00",
            ],
            "until",
        ),
    ],
)
def test_bad_values_exit_1_naming_the_field(args: list[str], field: str) -> None:
    account_id = _account("Acme")
    args = [account_id if a == "ACC" else a for a in args]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.stdout
    assert json.loads(result.stdout)["error"]["field"] == field


def _ledger_history() -> str:
    account_id = _account("Ledger Co")
    for n in range(5):
        with unit_of_work() as uow:
            adjustments.adjust(
                uow,
                account_id=account_id,
                amount=f"{n + 1}",
                reason=f"r{n}",
                now=T + timedelta(hours=n),
            )
    return account_id


def test_ledger_limit_keeps_the_newest_printed_oldest_first_and_since_until_window() -> None:
    account_id = _ledger_history()
    every = ok("ledger", account_id)
    assert [e["amount"] for e in every] == ["1.00", "2.00", "3.00", "4.00", "5.00"]
    assert [e["amount"] for e in ok("ledger", account_id, "--limit", "2")] == ["4.00", "5.00"]
    window = ok(
        "ledger",
        account_id,
        "--since",
        (T + timedelta(hours=1)).isoformat(),
        "--until",
        (T + timedelta(hours=3)).isoformat(),
    )
    assert [e["amount"] for e in window] == ["2.00", "3.00"]  # since inclusive, until exclusive
    assert "postings" in window[0]  # --json keeps the whole transaction
    both = ok("ledger", account_id, "--since", T.isoformat(), "--limit", "1")
    assert [e["amount"] for e in both] == ["5.00"]


def test_charges_limit_since_until() -> None:
    account_id = _account("Charge Co")
    with unit_of_work() as uow:
        method = payment_methods.add(
            uow,
            account_id=account_id,
            psp="braintree",
            nonce=f"fake-valid-visa-nonce:{account_id}",
            now=T,
        )["id"]
    for n in range(4):
        at = T + timedelta(days=n)
        with unit_of_work() as uow:
            top_ups.top_up(
                uow,
                account_id=account_id,
                amount=f"{n + 1}0",
                idempotency_key=f"k{n}",
                payment_method_id=method,
                now_fn=lambda at=at: at,
            )
    assert [c["amount"] for c in ok("charges", account_id)] == ["10.00", "20.00", "30.00", "40.00"]
    assert [c["amount"] for c in ok("charges", account_id, "--limit", "3")] == [
        "20.00",
        "30.00",
        "40.00",
    ]
    window = ok("charges", account_id, "--since", (T + timedelta(days=2)).isoformat())
    assert [c["amount"] for c in window] == ["30.00", "40.00"]
    window = ok("charges", account_id, "--until", (T + timedelta(days=1)).isoformat())
    assert [c["amount"] for c in window] == ["10.00"]
    table = runner.invoke(app, ["charges", account_id, "--limit", "1"])
    assert "succeeded" in table.stdout and "40.00" in table.stdout and "1 row" in table.stdout


def test_lists_are_tables_for_people_and_json_with_the_flag() -> None:
    account_id = _ledger_history()
    result = runner.invoke(app, ["ledger", account_id, "--limit", "2"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "kind" in line)
    for column in ("created_at", "id", "kind", "reference", "amount", "balance_after"):
        assert column in header
    assert "2 rows" in result.stdout
    assert sum("adjustment" in line for line in lines) == 2
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)
    listed = runner.invoke(app, ["accounts", "list", "--search", "ledger co"])
    assert account_id in listed.stdout and "Ledger Co" in listed.stdout
    assert "1 row" in listed.stdout
    empty = runner.invoke(app, ["accounts", "list", "--search", "nobody"])
    assert empty.exit_code == 0 and "(none)" in empty.stdout
    shown = runner.invoke(app, ["accounts", "show", account_id])  # one object: key: value lines
    assert f"id: {account_id}" in shown.stdout
    assert "days_left:" in shown.stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["accounts", "update", "ACC", "--country", "EU"], "country"),
        (["accounts", "update", "ACC", "--country", "ZZ"], "country"),
        (["accounts", "update", "ACC", "--country", "UN"], "country"),
        (["accounts", "update", "ACC", "--country", "QO"], "country"),
        (["accounts", "update", "ACC", "--display-currency", "XAU"], "display_currency"),
        (["accounts", "create", "--name", "x", "--currency", "XXX"], "currency"),
        (["accounts", "create", "--name", "x", "--currency", "XTS"], "currency"),
        (["accounts", "create", "--name", "x", "--country", "EU"], "country"),
    ],
)
def test_placeholder_countries_and_currencies_are_refused(args: list[str], field: str) -> None:
    """Issue fixred, point 4: nothing written, the field named."""
    account_id = _account("Acme")
    before = ok("accounts", "show", account_id)
    refused(field, "invalid", *[account_id if a == "ACC" else a for a in args])
    after = ok("accounts", "show", account_id)
    assert {**after, "runway": None} == {**before, "runway": None}
    assert len(ok("accounts", "list")) == 1
