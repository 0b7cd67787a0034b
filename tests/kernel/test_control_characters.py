"""Control characters never reach the database as a crash (issue 11, item 9).

`balance.usage.debit(ID, "1.00", "r1", "desc\\x00")` used to fail with psycopg's DataError
("text fields cannot contain NUL bytes"). The rule now:

- ids, references, keys, nonces, codes and addresses holding a control character (C0, DEL,
  C1) or an unpaired surrogate are refused naming the field, before any query, and nothing
  is written;
- free text (descriptions, reasons, names) is cleaned: those characters are removed, tab and
  line feed are kept.

Through the tasks (called as the other integration tests call them) and `balancectl`
(in-process with typer's runner: an operating system cannot pass a NUL in argv).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from worker.accounts import service as accounts
from worker.cli import app as cli
from worker.db.session import get_engine, unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import DomainError
from worker.ledger import adjustments
from worker.payment_methods import service as payment_methods

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\t", "\n", "\ud800"]


def _account() -> tuple[str, str]:
    """An account with 100.00 and a default card: (account id, method id)."""
    with unit_of_work() as uow:
        account_id = str(
            accounts.create(uow, name="Ctl", emails=["a@example.com"], now=now())["id"]
        )
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=account_id, amount="100", reason="funds", now=now())
    with unit_of_work() as uow:
        method = payment_methods.add(
            uow, account_id=account_id, psp="braintree", nonce="fake-valid-visa-nonce", now=now()
        )
    return account_id, str(method["id"])


def _snapshot() -> dict[str, Any]:
    engine = get_engine()
    tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")
    with engine.connect() as conn:
        return {
            t: sorted(str(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {t}")))
            for t in tables
        }


def _tasks() -> dict[str, Any]:
    from worker.celery import app

    app.loader.import_default_modules()
    return dict(app.tasks)


def _descriptions() -> list[str]:
    with get_engine().connect() as conn:
        return [
            str(v)
            for v in conn.execute(
                text("SELECT description FROM ledger_transactions ORDER BY created_at")
            ).scalars()
        ]


def test_the_reported_debit_stores_its_description_cleaned() -> None:
    account_id, _ = _account()
    result = _tasks()["balance.usage.debit"](account_id, "1.00", "r1", "desc\x00")
    assert result["balance"] == "99.00"
    assert _descriptions()[-1] == "desc"


def test_free_text_keeps_tab_and_line_feed_and_loses_the_other_controls() -> None:
    account_id, _ = _account()
    tasks = _tasks()
    tasks["balance.usage.debit"](
        account_id, "1", "r1", "line 1\r\nline 2\ttab\x1b[31m red\x07\x85\ud800 end\x7f"
    )
    tasks["balance.ledger.adjust"](account_id, "2", "good\x00will\x1f")
    assert _descriptions()[-2:] == ["line 1\nline 2\ttab[31m red end", "goodwill"]
    # Left empty by cleaning, free text counts as absent: a reason is then missing.
    before = _snapshot()
    with pytest.raises(DomainError) as info:
        tasks["balance.ledger.adjust"](account_id, "2", "\x00\x01")
    assert info.value.field == "reason"
    assert _snapshot() == before


@pytest.mark.parametrize("char", CONTROLS)
def test_ids_references_and_keys_with_a_control_character_are_refused_by_name(
    char: str,
) -> None:
    account_id, method_id = _account()
    tasks = _tasks()
    before = _snapshot()
    calls = [
        ("account_id", "balance.usage.debit", (account_id + char, "1", "r1"), {}),
        ("account_id", "balance.usage.debit", (char + account_id, "1", "r1"), {}),
        ("reference", "balance.usage.debit", (account_id, "1", "r1" + char), {}),
        ("account_id", "balance.ledger.adjust", (account_id + char, "1", "why"), {}),
        ("reference", "balance.ledger.adjust", (account_id, "1", "why"), {"reference": char}),
        ("account_id", "balance.payments.top_up", (account_id + char, "5"), {}),
        (
            "payment_method_id",
            "balance.payments.top_up",
            (account_id, "5"),
            {"payment_method_id": method_id + char},
        ),
        (
            "idempotency_key",
            "balance.payments.top_up",
            (account_id, "5"),
            {"idempotency_key": "k" + char},
        ),
        ("account_id", "balance.auto_reload.reload", (account_id + char,), {}),
        ("account_id", "balance.auto_reload.reload_now", (account_id + char,), {}),
        ("account_ids", "balance.auto_reload.reload_batch", ([account_id, "x" + char],), {}),
        ("as_of", "balance.auto_reload.sweep", ("2026-11-21T10:00:00+00:00" + char,), {}),
    ]
    for field, name, args, kwargs in calls:
        with pytest.raises(DomainError) as info:
            tasks[name](*args, **kwargs)
        assert info.value.field == field, (name, args, kwargs, str(info.value))
    assert _snapshot() == before


def test_services_refuse_control_characters_without_the_task_boundary() -> None:
    """The CLI and other in-process callers reach the services directly: the same checks."""
    account_id, method_id = _account()
    runner = CliRunner()
    before = _snapshot()
    commands = [
        ("account_id", ["accounts", "show", account_id + "\x00"]),
        ("account_id", ["ledger", account_id + "\x00"]),
        ("account_id", ["charges", account_id + "\x00"]),
        ("account_id", ["methods", "list", account_id + "\x00"]),
        ("account_id", ["usage", "debit", account_id + "\x00", "1", "--reference", "r1"]),
        ("reference", ["usage", "debit", account_id, "1", "--reference", "r1\x00"]),
        ("account_id", ["adjust", account_id + "\x1b", "1", "--reason", "x"]),
        ("idempotency_key", ["top-up", account_id, "5", "--idempotency-key", "k\x00"]),
        ("payment_method_id", ["methods", "remove", account_id, method_id + "\x00"]),
        (
            "method",
            [
                "auto-reload",
                "set",
                account_id,
                "--threshold",
                "1",
                "--amount",
                "5",
                "--method",
                method_id + "\x00",
            ],
        ),
        ("nonce", ["methods", "add", account_id, "--psp", "braintree", "--nonce", "n\x00"]),
        ("psp", ["methods", "add", account_id, "--psp", "braintree\x00", "--nonce", "n"]),
        ("email", ["alerts", "set", account_id, "--threshold", "5", "--email", "a@b.co\x00"]),
        ("currency", ["accounts", "create", "--name", "N", "--currency", "EUR\n"]),
        ("country", ["accounts", "create", "--name", "N", "--country", "GB\x00"]),
        ("locale", ["accounts", "create", "--name", "N", "--locale", "en\x00"]),
        ("email", ["accounts", "create", "--name", "N", "--email", "a@b.co\x00"]),
        ("as_of", ["jobs", "run", "alerts", "--as-of", "2026-11-21T10:00:00+00:00\x00"]),
    ]
    for field, args in commands:
        result = runner.invoke(cli, [*args, "--json"])
        assert result.exit_code == 1, (args, result.output, result.exception)
        error = json.loads(result.stdout)["error"]
        assert error["field"] == field, (args, error)
        assert result.stderr.startswith(f"error: {field}: "), (args, result.stderr)
    assert _snapshot() == before


def test_a_cli_description_and_name_are_cleaned() -> None:
    account_id, _ = _account()
    runner = CliRunner()
    debited = runner.invoke(
        cli,
        ["usage", "debit", account_id, "1", "--reference", "r1", "--description", "a\x00b\x1b",
         "--json"],
    )  # fmt: skip
    assert debited.exit_code == 0, debited.output
    assert _descriptions()[-1] == "ab"
    created = runner.invoke(cli, ["accounts", "create", "--name", "Acme\x00 Ltd\x07", "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["name"] == "Acme Ltd"


def test_a_new_task_is_covered_at_the_boundary_without_checking_anything_itself() -> None:
    """The kind, not the instances: a task added later whose service forgets the check
    still refuses a control character by the argument's name, before any query; its
    declared free text passes through to be cleaned."""
    from worker.celery import app
    from worker.task_base import DbTask

    seen: list[tuple[object, object]] = []

    @app.task(name="tests.control.echo", base=DbTask, bind=True, free_text=("note",))
    def echo(self: DbTask, thing_id: object, note: object = None) -> dict[str, Any]:
        seen.append((thing_id, note))
        return {"ok": True}

    for bad in (["x\x00"], {"k": "\x1b"}, {"\x00": 1}, "y\ud800"):
        with pytest.raises(DomainError) as info:
            echo(bad)
        assert info.value.field == "thing_id"
    assert seen == []
    assert echo("t-1", note="free \x00 text") == {"ok": True}
    assert seen == [("t-1", "free \x00 text")]
