"""balancectl as operators run it: a real process, one JSON document, contract exit codes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.ledger import adjustments
from worker.outbox import events
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

ACCOUNT_FIELDS = {
    "id",
    "name",
    "currency",
    "country",
    "status",
    "balance",
    "locale",
    "display_currency",
    "auto_reload",
    "alerts",
}


def balancectl() -> list[str]:
    script = Path(sys.executable).with_name("balancectl")
    if script.exists():
        return [str(script)]
    found = shutil.which("balancectl")
    return [found] if found else [sys.executable, "-m", "worker.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*balancectl(), *args],
        env=dict(os.environ) if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok_json(*args: str, **kwargs: Any) -> Any:
    """Run a data command with --json: exit 0 and exactly one JSON document on stdout."""
    result = run(*args, "--json", **kwargs)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)  # raises on anything but one document


def check_refusal(
    result: subprocess.CompletedProcess[str], field: str, code: str
) -> dict[str, Any]:
    """A refusal: exit 1, one stderr line naming the field, the error document on stdout."""
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert field in lines[0]
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"error"}
    error = document["error"]
    assert set(error) == {"code", "field", "message"}
    assert error["field"] == field
    assert error["code"] == code
    assert field in error["message"]
    return dict(error)


def create_account(*extra: str) -> dict[str, Any]:
    return dict(ok_json("accounts", "create", "--name", "Acme Ltd", *extra))


def new_account() -> str:
    """An account made in-process (fast) for tests whose subject is another command."""
    with unit_of_work() as uow:
        return str(accounts.create(uow, name="Acme Ltd", now=now())["id"])


def run_many(commands: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands side by side (process start-up dominates their run time)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run(*args), commands))


# --- happy paths ---------------------------------------------------------------------------------


def test_db_upgrade() -> None:
    assert ok_json("db", "upgrade")["ok"] is True


def test_accounts_money_commands_ledger_and_relay() -> None:
    created = create_account(
        "--currency",
        "EUR",
        "--country",
        "DE",
        "--email",
        "billing@example.com",
        "--email",
        "ops@example.com",
        "--locale",
        "ja",
        "--display-currency",
        "USD",
    )
    account_id = created["id"]
    assert isinstance(account_id, str)
    assert created["balance"] == "0.00"

    credited = ok_json("adjust", account_id, "10", "--reason", "welcome credit")
    assert credited["balance"] == "10.00"
    assert {"account_id", "balance", "currency", "transaction_id"} <= set(credited)

    debited = ok_json("usage", "debit", account_id, "0.0057", "--reference", "msg-1")
    assert debited["account_id"] == account_id
    assert debited["balance"] == "9.9943"
    assert debited["currency"] == "EUR"
    assert debited["duplicate"] is False
    again = ok_json("usage", "debit", account_id, "0.0057", "--reference", "msg-1")
    assert again["duplicate"] is True
    assert again["transaction_id"] == debited["transaction_id"]
    assert again["balance"] == "9.9943"

    negative = ok_json("adjust", account_id, "-5", "--reason", "x")  # a negative amount parses
    assert negative["balance"] == "4.9943"

    entries = ok_json("ledger", account_id)
    assert isinstance(entries, list)
    assert [e["id"] for e in entries] == [
        credited["transaction_id"],
        debited["transaction_id"],
        negative["transaction_id"],
    ]  # oldest first
    assert [e["amount"] for e in entries] == ["10.00", "-0.0057", "-5.00"]
    assert [e["balance_after"] for e in entries] == ["10.00", "9.9943", "4.9943"]
    for entry in entries:
        assert len(entry["postings"]) == 2
        assert sum(Decimal(p["amount"]) for p in entry["postings"]) == 0

    shown = ok_json("accounts", "show", account_id)
    assert set(shown) >= ACCOUNT_FIELDS
    assert shown["id"] == account_id
    assert shown["name"] == "Acme Ltd"
    assert shown["currency"] == "EUR"
    assert shown["country"] == "DE"
    assert shown["status"] == "active"
    assert shown["balance"] == "4.9943"
    assert shown["locale"] == "ja"
    assert shown["display_currency"] == "USD"
    assert shown["auto_reload"] == {
        "enabled": False,
        "threshold": None,
        "amount": None,
        "payment_method_id": None,
        "action_required_at": None,
    }
    assert shown["alerts"] == {
        "enabled": False,
        "threshold": None,
        "emails": ["billing@example.com", "ops@example.com"],
        "state": "armed",
        "last_alert_at": None,
    }

    relayed = ok_json("jobs", "run", "events")
    # two balance.adjusted events; the events queue's length is whatever earlier tests left
    assert isinstance(relayed.pop("queue_length"), int)
    assert relayed == {"published": 2, "paused": False, "queue_max": 100_000}
    with unit_of_work() as uow:
        assert (
            uow.session.scalar(text("SELECT count(*) FROM events WHERE published_at IS NULL")) == 0
        )


def test_human_output_is_not_json() -> None:
    account_id = new_account()
    result = run("accounts", "show", account_id)
    assert result.returncode == 0
    assert account_id in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


# --- refusals: exit 1 ----------------------------------------------------------------------------


def test_refusals_name_the_field_and_change_nothing() -> None:
    account_id = new_account()
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="1", reason="seed", now=now())
    with unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount="0.5", reference="msg-1", now=now())
    debit = ["usage", "debit", account_id]
    cases: list[tuple[list[str], str, str]] = [
        ([*debit, "abc", "--reference", "r"], "amount", "invalid"),
        ([*debit, "1e400", "--reference", "r"], "amount", "invalid"),
        ([*debit, "0.6", "--reference", "r"], "amount", "insufficient_funds"),
        ([*debit, "0.4", "--reference", "msg-1"], "reference", "reference_conflict"),
        (["adjust", account_id, "-2", "--reason", "x"], "amount", "insufficient_funds"),
        (["adjust", account_id, "2", "--reason", " "], "reason", "invalid"),
        (["ledger", "acc_missing"], "account_id", "not_found"),
        (["accounts", "create", "--name", "X", "--currency", "EURO"], "currency", "invalid"),
        (["jobs", "run", "nonsense"], "job", "invalid"),
    ]
    commands = [[*args, "--json"] for args, _, _ in cases]
    commands.append(["accounts", "show", "acc_missing"])  # without --json
    *results, plain = run_many(commands)
    for (_args, field, code), result in zip(cases, results, strict=True):
        check_refusal(result, field, code)

    assert plain.returncode == 1
    assert plain.stdout == ""  # without --json: nothing on stdout
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "account_id" in lines[0]

    with unit_of_work() as uow:
        assert uow.session.scalar(text("SELECT count(*) FROM accounts")) == 1
        assert uow.session.scalar(text("SELECT count(*) FROM ledger_transactions")) == 2
        assert uow.session.scalar(text("SELECT count(*) FROM events")) == 1
        assert accounts.get(uow.session, account_id).balance == Decimal("0.5")


# --- unparsable command lines: exit 2 ------------------------------------------------------------


def test_unparsable_command_lines_exit_2() -> None:
    commands = [
        ["no-such-command"],
        ["usage", "debit"],
        ["usage", "debit", "acc_x", "5"],  # --reference missing
        ["usage", "debit", "acc_x", "5", "--reference", "r", "--bogus"],
        ["adjust", "acc_x", "5"],  # --reason missing
        ["adjust", "acc_x", "-5", "--reason"],  # --reason without a value
        ["accounts", "create", "--json"],  # --name missing
        ["accounts", "show", "--json"],  # ID missing
        ["accounts", "show", "a", "b"],
    ]
    results = run_many(commands)
    wrong = [(r.args[1:], r.returncode) for r in results if r.returncode != 2]
    assert wrong == []


# --- a broker that is down never fails a committed command ---------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def broker_down_adjust() -> dict[str, Any]:
    """One `adjust` with the broker unreachable (slow: the client retries), shared by two tests.

    Everything is gathered here, before the per-test TRUNCATE can remove it.
    """
    account_id = new_account()
    env = {**os.environ, "BROKER_URL": f"redis://127.0.0.1:{_closed_port()}/0"}
    env.pop("RESULT_BACKEND", None)
    result = run("adjust", account_id, "3", "--reason", "seed", "--json", env=env)
    with unit_of_work() as uow:
        pending = uow.session.scalar(
            text("SELECT count(*) FROM events WHERE published_at IS NULL AND account_id = :id"),
            {"id": account_id},
        )
        balance = accounts.get(uow.session, account_id).balance
    published: list[dict[str, Any]] = []
    with unit_of_work() as uow:
        events.relay(uow, published.append, now())
    return {
        "result": result,
        "pending": pending,
        "balance": balance,
        "relayed": [m for m in published if m["account_id"] == account_id],
    }


def test_broker_down_still_succeeds_and_the_event_waits_in_the_outbox(
    broker_down_adjust: dict[str, Any],
) -> None:
    result = broker_down_adjust["result"]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["balance"] == "3.00"
    assert broker_down_adjust["balance"] == Decimal("3")
    assert broker_down_adjust["pending"] == 1  # nothing lost: the next relay publishes it
    assert [m["type"] for m in broker_down_adjust["relayed"]] == ["balance.adjusted"]


def test_broker_down_success_prints_no_traceback(broker_down_adjust: dict[str, Any]) -> None:
    result = broker_down_adjust["result"]
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 1


def _unreachable_database_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgresql+psycopg://admin:S3cretPW@127.0.0.1:{_closed_port()}/x"
    return env


def test_database_down_is_one_line_and_one_json_document() -> None:
    result = run("accounts", "show", "acc_x", "--json", env=_unreachable_database_env())
    assert result.returncode == 1
    assert "S3cretPW" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "DATABASE_URL"


def test_db_upgrade_failure_is_one_line() -> None:
    result = run("db", "upgrade", "--json", env=_unreachable_database_env())
    assert result.returncode == 1
    assert "S3cretPW" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["error"]["field"] == "DATABASE_URL"
    assert len(result.stderr.strip().splitlines()) == 1


# --- the embedded default: no servers, files under BALANCE_HOME ----------------------------------


def _embedded_env(home: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "BALANCE_HOME"):
        env.pop(name, None)
    if home is not None:
        env["BALANCE_HOME"] = str(home)
    return env


def test_embedded_commands_share_one_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = _embedded_env(home)

    account = ok_json("accounts", "create", "--name", "Local", env=env, cwd=cwd)
    account_id = account["id"]
    assert (home / "balance.db").exists()
    assert ok_json("adjust", account_id, "10", "--reason", "seed", env=env, cwd=cwd)["balance"] == (
        "10.00"
    )
    debited = ok_json("usage", "debit", account_id, "2.5", "--reference", "m1", env=env, cwd=cwd)
    assert debited["balance"] == "7.50"
    shown = ok_json("accounts", "show", account_id, env=env, cwd=cwd)
    assert shown["balance"] == "7.50"

    assert not (cwd / ".balance").exists()  # BALANCE_HOME was honoured
    # Nothing of it went to the session's PostgreSQL.
    with unit_of_work() as uow:
        assert uow.session.scalar(text("SELECT count(*) FROM accounts")) == 0


def test_embedded_default_home_is_dot_balance(tmp_path: Path) -> None:
    env = _embedded_env(None)
    created = ok_json("accounts", "create", "--name", "Local", env=env, cwd=tmp_path)
    assert created["balance"] == "0.00"
    assert (tmp_path / ".balance" / "balance.db").exists()
