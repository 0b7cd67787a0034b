"""The fast CLI (issue 18): `balancectl accounts show` imports only what it uses.

These pin the mechanisms (the command map, the schema check without Alembic, the light
reads) and that a real `accounts show` process never loads the heavy modules; the wall
time itself is measured by bench/cli_startup.py (figures in README.md), not asserted here
on a shared machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from worker import cli
from worker.db import schema_check
from worker.kernel import bank_settings


def test_every_command_word_maps_to_the_module_that_registers_it() -> None:
    app = cli.load()
    words: dict[str, str] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        words[command.name or command.callback.__name__] = command.callback.__module__
    for group in app.registered_groups:
        assert group.typer_instance is not None
        callback = group.typer_instance.registered_commands[0].callback
        assert callback is not None
        words[str(group.name)] = callback.__module__
    for word, module in cli.COMMANDS.items():
        assert words[word] == f"worker.cli.{module}", word
    # A command missing from COMMANDS still works (every module is loaded): only a stale
    # entry would break, and the loop above catches that.
    assert set(cli.COMMANDS.values()) <= set(cli.MODULES)


def test_light_reads_are_only_reads() -> None:
    assert cli._light(["accounts", "show", "acc_1", "--json"])
    assert cli._light(["accounts", "list"])
    assert cli._light(["ledger", "acc_1", "--limit", "5"])
    assert not cli._light(["accounts", "create", "--name", "x"])
    assert not cli._light(["charges", "acc_1"])
    assert not cli._light(["--help"])
    assert not cli._light([])


def test_schema_check_reads_the_head_from_the_migration_files(tmp_path: Path) -> None:
    from worker.db.migrate import head_revisions

    assert schema_check.head_revisions() == frozenset(head_revisions())
    db = tmp_path / "x.db"
    assert not schema_check.at_head(db)  # no file: ask Alembic
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE other (x)")
    assert not schema_check.at_head(db)  # no version table
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        conn.execute("INSERT INTO alembic_version VALUES ('0001')")
    assert not schema_check.at_head(db)  # behind
    [head] = schema_check.head_revisions() or {""}
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (head,))
    assert schema_check.at_head(db)


def test_the_packaged_sandbox_bank_accounts_are_valid() -> None:
    """Start-up no longer checks them (no BANK_ACCOUNTS set): this does."""
    accounts = bank_settings.bank_accounts("")
    assert accounts  # every sandbox IBAN and BIC passed python-stdnum's checks


@pytest.mark.integration
def test_accounts_show_in_a_real_process_loads_no_heavy_module(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BROKER_URL"}}
    env.pop("RESULT_BACKEND", None)
    env["BALANCE_HOME"] = str(tmp_path / "home")
    script = Path(sys.executable).with_name("balancectl")
    created = subprocess.run(
        [str(script), "accounts", "create", "--name", "Fast", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    account_id = json.loads(created.stdout)["id"]
    probe = (
        "import sys, json\n"
        f"sys.argv = ['balancectl', 'accounts', 'show', {account_id!r}, '--json']\n"
        "from worker.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ['alembic', 'fpdf', 'celery', 'holidays', 'jinja2', 'stdnum', 'worker.wiring',"
        " 'worker.invoices', 'worker.bank', 'worker.charges', 'rich.table', 'email_validator',"
        " 'sqlalchemy', 'worker.ledger.models', 'worker.fx']\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == account_id
    assert json.loads(shown.stderr.strip().splitlines()[-1]) == []
