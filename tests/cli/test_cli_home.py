"""The CLI says where it is, and never makes an empty database by accident (issue 11, item 6).

A command run from the wrong folder used to create an empty `.balance/` there and answer
`no account`. Now only the commands that create data from nothing (`accounts create`, `db
upgrade`, `run`) may create the embedded database; every other command refuses naming
BALANCE_HOME and creates nothing. `balancectl info` says what a command talks to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer.main
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from config import Settings, reset_settings
from worker.cli import app
from worker.cli.ops import needs_home_lock
from worker.db.migrate import head_revisions
from worker.db.session import unit_of_work

pytestmark = pytest.mark.integration  # `info` and the no-schema case use the session's PostgreSQL

# The commands that may create the embedded database; `info` reads only.
CREATING = {("accounts", "create"), ("db", "upgrade"), ("run",)}
NOT_DATA = {("info",)}
# Arguments a generic "1" would not get past (a refusal of the value before the database).
ARGS = {("jobs", "run"): ["audit"], ("invoices", "pay"): ["inv_1", "--out-of-band"]}


def balancectl() -> str:
    return str(Path(sys.executable).with_name("balancectl"))


def embedded_env(home: Path | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "BALANCE_HOME"}
    }
    if home is not None:
        env["BALANCE_HOME"] = str(home)
    return env


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [balancectl(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def refused_no_database(result: subprocess.CompletedProcess[str], field: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert field in lines[0]
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["field"]) == ("no_database", field)
    return str(error["message"])


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- the reported fault, as operators hit it ------------------------------------------------------


def test_a_read_from_another_folder_refuses_naming_balance_home_and_creates_nothing(
    tmp_path: Path,
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    env = embedded_env(None)  # the default home: ./.balance of the current folder
    created = cli("accounts", "create", "--name", "Here", "--json", env=env, cwd=project)
    assert created.returncode == 0, created.stderr
    account_id = json.loads(created.stdout)["id"]

    result = cli("accounts", "show", account_id, "--json", env=env, cwd=elsewhere)
    message = refused_no_database(result, "BALANCE_HOME")
    assert str(elsewhere / ".balance" / "balance.db") in message  # where it looked
    assert "set BALANCE_HOME" in message and "balancectl db upgrade" in message
    assert tree(elsewhere) == []  # no .balance/, no file

    # From the right folder, or with BALANCE_HOME pointing there, the account is found.
    shown = cli("accounts", "show", account_id, "--json", env=env, cwd=project)
    assert json.loads(shown.stdout)["id"] == account_id
    pointed = cli(
        "accounts",
        "show",
        account_id,
        "--json",
        env=embedded_env(project / ".balance"),
        cwd=elsewhere,
    )
    assert json.loads(pointed.stdout)["id"] == account_id
    assert tree(elsewhere) == []


def test_a_balance_home_that_does_not_exist_is_not_created_by_a_read(tmp_path: Path) -> None:
    home = tmp_path / "no" / "such" / "home"
    result = cli("audit", "--json", env=embedded_env(home), cwd=tmp_path)
    message = refused_no_database(result, "BALANCE_HOME")
    assert f"BALANCE_HOME={home}" in message
    assert tree(tmp_path) == []


def test_db_upgrade_creates_the_embedded_database_and_reads_then_work(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "home")
    upgraded = cli("db", "upgrade", "--json", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "home" / "balance.db").exists()
    audit = cli("audit", "--json", env=env, cwd=tmp_path)
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["ok"] is True


# --- every command, in-process --------------------------------------------------------------------


def _leaf_commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the app, by its path (typer's own click: walked by shape)."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            for name, sub in subcommands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), ())


def _args_for(path: tuple[str, ...], command: Any) -> list[str]:
    """A command line that parses: "1" for every argument and required option, the first
    choice where there are choices, and --json when the command takes it."""
    if path in ARGS:
        return [*path, *ARGS[path], "--json"]
    args: list[str] = list(path)
    for param in command.params:
        kind = getattr(param, "type", None) or getattr(param, "bare_type", None)
        choices = getattr(kind, "choices", None)
        value = str(choices[0]) if choices else "1"
        if param.param_type_name == "argument":
            args.append(value)
        elif param.required and not getattr(param, "is_flag", False):
            args += [param.opts[0], value]
    if any("--json" in param.opts for param in command.params):
        args.append("--json")
    return args


COMMANDS = [path for path, _ in _leaf_commands() if path not in CREATING and path not in NOT_DATA]


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded default, run from an empty folder (settings re-read, restored after)."""
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "BALANCE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    reset_settings()
    yield tmp_path
    reset_settings()


def test_the_command_list_is_walked() -> None:
    assert ("accounts", "show") in COMMANDS and ("methods", "set-default") in COMMANDS
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_data_command_refuses_without_a_database_and_creates_nothing(
    nowhere: Path, path: tuple[str, ...]
) -> None:
    command = dict(_leaf_commands())[path]
    result = CliRunner().invoke(app, _args_for(path, command))
    assert result.exit_code == 1, (result.stdout, result.stderr)
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["field"]) == ("no_database", "BALANCE_HOME"), error
    assert tree(nowhere) == []


def test_a_sqlite_database_url_to_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    env = embedded_env(None)
    env["DATABASE_URL"] = f"sqlite+pysqlite:///{tmp_path / 'db' / 'missing.db'}"
    result = cli("accounts", "show", "acc_1", "--json", env=env, cwd=tmp_path)
    refused_no_database(result, "DATABASE_URL")
    assert tree(tmp_path) == []


def test_a_server_database_without_our_tables_says_db_upgrade() -> None:
    url = make_url(os.environ["DATABASE_URL"])
    with unit_of_work() as uow:
        uow.session.execute(text("CREATE SCHEMA IF NOT EXISTS nothing_here"))
    try:
        empty = url.update_query_dict({"options": "-csearch_path=nothing_here"})
        env = {**os.environ, "DATABASE_URL": empty.render_as_string(hide_password=False)}
        result = cli("accounts", "show", "acc_1", "--json", env=env, cwd=Path.cwd())
        message = refused_no_database(result, "DATABASE_URL")
        assert "balancectl db upgrade" in message
        info = json.loads(cli("info", "--json", env=env, cwd=Path.cwd()).stdout)
        assert (info["schema_revision"], info["database_status"]) == (None, "no_schema")
    finally:
        with unit_of_work() as uow:
            uow.session.execute(text("DROP SCHEMA nothing_here CASCADE"))


# --- balancectl info ------------------------------------------------------------------------------


def test_info_on_a_fresh_folder_reports_the_embedded_default_and_creates_nothing(
    tmp_path: Path,
) -> None:
    result = cli("info", "--json", env=embedded_env(None), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    home = tmp_path / ".balance"
    assert info["balance_home"] == str(home)
    assert info["database"] == f"sqlite+pysqlite:///{home / 'balance.db'}"
    assert info["broker"] == f"sqla+sqlite:///{home / 'broker.db'}"
    assert info["schema_revision"] is None
    assert info["database_status"] == "missing"
    assert info["version"] == version("balance-worker")
    assert info["embedded"] is True
    assert tree(tmp_path) == []

    created = cli(
        "accounts", "create", "--name", "A", "--json", env=embedded_env(None), cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    after = json.loads(cli("info", "--json", env=embedded_env(None), cwd=tmp_path).stdout)
    assert after["schema_revision"] == ",".join(head_revisions()) == after["schema_head"]
    assert after["database_status"] == "ok"


def test_info_hides_passwords_and_reads_the_server_schema_revision(tmp_path: Path) -> None:
    url = make_url(os.environ["DATABASE_URL"])
    env = {
        **os.environ,
        "BALANCE_HOME": str(tmp_path / "home"),
        "BROKER_URL": "redis://:BrokerS3cret@127.0.0.1:6399/3",
    }
    result = cli("info", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    assert set(info) >= {"database", "broker", "balance_home", "schema_revision", "version"}
    assert info["broker"] == "redis://:***@127.0.0.1:6399/3"
    assert "BrokerS3cret" not in result.stdout + result.stderr
    assert make_url(info["database"]).database == url.database
    if url.password:
        assert str(url.password) not in result.stdout
    assert info["schema_revision"] == ",".join(head_revisions())
    assert info["embedded"] is False
    assert tree(tmp_path) == []  # BALANCE_HOME is reported, not created

    env["DATABASE_URL"] = url.set(password="DbS3cretPW").render_as_string(hide_password=False)
    env["DATABASE_URL"] = env["DATABASE_URL"].replace(f"{url.host}:{url.port}", "127.0.0.1:9")
    down = cli("info", "--json", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr  # info reports an unreachable database
    shown = json.loads(down.stdout)
    assert "DbS3cretPW" not in down.stdout + down.stderr
    assert ":***@" in shown["database"]
    assert (shown["database_status"], shown["schema_revision"]) == ("unreachable", None)
    assert shown["database_error"]


def test_info_human_output_names_every_field(tmp_path: Path) -> None:
    result = cli("info", env=embedded_env(tmp_path / "h"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for field in ("database:", "broker:", "balance_home:", "schema_revision:", "version:"):
        assert field in result.stdout


# --- which `run` locks its home -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("database", "broker", "locks"),
    [
        (None, None, True),  # embedded: SQLite + SQLAlchemy broker
        ("postgresql+psycopg://u@h/db", None, True),  # embedded broker and beat
        ("postgresql+psycopg://u@h/db", "amqp://h//", True),  # beat without a lock of its own
        (None, "redis://h:6379/0", True),  # embedded database
        ("postgresql+psycopg://u@h/db", "redis://h:6379/0", False),  # RedBeat: a fleet
    ],
)
def test_which_runs_take_the_home_lock(
    database: str | None, broker: str | None, locks: bool
) -> None:
    settings = Settings.model_validate({"DATABASE_URL": database, "BROKER_URL": broker})
    assert needs_home_lock(settings) is locks
