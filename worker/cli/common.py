"""What every balancectl command shares: the root app, output, exit codes, the unit of work.

Every data command takes --json and then prints exactly one JSON document, the same
object the matching task returns. Exit 0 on success; 1 on a refused operation or a
bad value (one line on stderr naming the field); 2 when the command line cannot be parsed.
Commands import what they use inside their function, so `balancectl --help` and a simple
read stay fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from config import SettingsError, get_settings
from worker.kernel.errors import NoDatabase
from worker.kernel.redaction import redact

if TYPE_CHECKING:
    from sqlalchemy.exc import DBAPIError

app = typer.Typer(
    name="balancectl",
    no_args_is_help=True,
    add_completion=False,
    help="Operate balance-worker: accounts, ledger, jobs and the worker itself.",
)


@app.callback()
def _root() -> None:
    # A callback keeps the root a group even when `worker.cli.main` loaded one command's
    # module only: a typer app with a single command would otherwise run it without its name.
    pass


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
# `ledger` / `charges` windows (worker/kernel/listing.py).
LimitOpt = Annotated[
    str | None, typer.Option("--limit", help="Keep the newest N (still printed oldest first).")
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this moment (ISO-8601 with offset), inclusive.")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Before this moment (ISO-8601 with offset).")
]
NEGATIVE_OK = {"ignore_unknown_options": True}  # so `adjust ID -5` parses as an amount


def fail(code: str, field: str, message: str, as_json: bool) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if as_json:
        typer.echo(json.dumps({"error": {"code": code, "field": field, "message": message}}))
    raise typer.Exit(1)


def settings_or_exit(as_json: bool) -> None:
    try:
        get_settings()
    except SettingsError as exc:
        field = str(exc).split(":", 1)[0]
        fail("invalid_setting", field, str(exc), as_json)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for any other database, or an in-memory one)."""
    # The embedded default's own URL (`sqlite+pysqlite:///<absolute path>`) is read without
    # SQLAlchemy, which `accounts show` never imports (fast CLI, issue 18).
    prefix = "sqlite+pysqlite:///"
    if url.startswith(prefix) and not any(c in url for c in "?%") and len(url) > len(prefix):
        return Path(url[len(prefix) :]).resolve()
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def missing_database() -> NoDatabase | None:
    """The refusal for a command run where no database file exists, or None.

    Connecting to SQLite creates the file, so a read from the wrong folder used to make an
    empty database there and answer `no account`: the check runs before any connection."""
    settings = get_settings()
    path = sqlite_file(settings.effective_database_url)
    if path is None or path.exists():
        return None
    if not settings.embedded:
        return NoDatabase(
            "DATABASE_URL",
            f"no database file at {path}; check DATABASE_URL, or create it with "
            "`balancectl db upgrade`",
        )
    if "balance_home" in settings.model_fields_set:
        where = f"BALANCE_HOME={settings.balance_home}"
    else:
        where = "BALANCE_HOME is not set: the default ./.balance"
    return NoDatabase(
        "BALANCE_HOME",
        f"no embedded database at {path} ({where}, from {Path.cwd()}); run balancectl from "
        "the folder that holds .balance/, set BALANCE_HOME, or create one with "
        "`balancectl db upgrade`",
    )


def ensure_schema(create: bool = False) -> None:
    """The embedded default migrates its own schema; a server database uses `db upgrade`.

    Only a command that creates data (`create`: `accounts create`, `run`; and `db
    upgrade`) may create the embedded database; any other refuses with NoDatabase
    (field `BALANCE_HOME`, or `DATABASE_URL` for a SQLite file named there) and creates
    nothing: no folder, no file."""
    settings = get_settings()
    missing = missing_database()
    if missing is not None and not (create and settings.embedded):
        raise missing
    if settings.embedded:
        from worker.db.schema_check import at_head

        path = sqlite_file(settings.effective_database_url)
        if path is not None and at_head(path):
            return  # already migrated: no Alembic import (a third of a read's start-up)
        from worker.db.migrate import upgrade

        upgrade()


def _no_schema(exc: DBAPIError) -> bool:
    """A database without our tables (a new PostgreSQL database, a foreign SQLite file)."""
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ == "UndefinedTable" or "no such table" in str(orig)


def emit(result: Any, as_json: bool, columns: Sequence[str] | None = None) -> None:
    """`--json`: the one JSON document (CONTRACT.md), unchanged. For people: a list of
    objects is a table (`columns`, when given, choose and order its columns; worker/cli/
    tables.py), anything else `key: value` lines."""
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    if isinstance(result, list) and all(isinstance(item, dict) for item in result):
        from worker.cli.tables import print_table

        print_table(result, columns)
        return
    print_human(result)


def print_human(result: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(result, list):
        for item in result:
            if isinstance(item, dict):
                typer.echo(
                    pad
                    + "- "
                    + ", ".join(
                        f"{k}={v}" for k, v in item.items() if not isinstance(v, list | dict)
                    )
                )
                for key, value in item.items():
                    if isinstance(value, list | dict) and value:
                        typer.echo(f"{pad}  {key}:")
                        print_human(value, indent + 2)
            else:
                typer.echo(f"{pad}- {item}")
        return
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, dict | list):
                typer.echo(f"{pad}{key}:")
                print_human(value, indent + 1)
            else:
                typer.echo(f"{pad}{key}: {'' if value is None else value}")
        return
    typer.echo(f"{pad}{result}")


def run_action(
    as_json: bool,
    action: Callable[[], Any],
    *,
    write: bool = True,
    creates_database: bool = False,
    columns: Sequence[str] | None = None,
) -> Any:
    """Run one operation in a unit of work, mapping refusals to exit 1.

    `creates_database`: the command may create the embedded database when there is none
    (only commands that create data from nothing: `accounts create`); every other command
    refuses there (see `ensure_schema`)."""
    from worker.kernel.errors import DomainError

    settings_or_exit(as_json)
    try:
        ensure_schema(create=creates_database)
        result = action()
    except DomainError as exc:
        fail(exc.code, exc.field, str(exc), as_json)
    except SettingsError as exc:
        fail("invalid_setting", str(exc).split(":", 1)[0], str(exc), as_json)
    except Exception as exc:
        # SQLAlchemy's errors, named without importing it: a command that never loaded it
        # (the embedded `accounts show`, fast CLI) cannot have raised one.
        errors = sys.modules.get("sqlalchemy.exc")
        if errors is None or not isinstance(
            exc, errors.OperationalError | errors.InterfaceError | errors.ProgrammingError
        ):
            raise
        if _no_schema(exc):
            fail(
                NoDatabase.code,
                "DATABASE_URL",
                "DATABASE_URL: the database has no balance-worker tables "
                f"({one_line(exc)}); run `balancectl db upgrade`",
                as_json,
            )
        if isinstance(exc, errors.ProgrammingError):
            raise
        fail(
            "database_unavailable",
            "DATABASE_URL",
            f"DATABASE_URL: cannot use the database ({one_line(exc)})",
            as_json,
        )
    emit(result, as_json, columns)
    return result


def one_line(exc: BaseException) -> str:
    """The first line of an error, without card numbers: the contract wants one line."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines() or [type(orig).__name__]
    return (redact(lines[0]) or "")[:200]


def in_uow(fn: Callable[[Any], Any], *, wire: bool = True) -> Callable[[], Any]:
    """`fn(uow)` in one unit of work. `wire=False` for a read that posts nothing: the
    domains' hooks (worker/wiring.py, which imports every domain and the PDF renderer)
    are not loaded, a third of a read's start-up (the fast-CLI budget in README.md)."""

    def action() -> Any:
        from worker.db.session import unit_of_work

        if wire:
            from worker import wiring

            wiring.install()
        dispatch = cli_dispatch()
        with unit_of_work(dispatch=dispatch) as uow:
            return fn(uow)

    return action


def cli_dispatch() -> Callable[[str, tuple[Any, ...], dict[str, Any]], None]:
    """Follow-ups from the CLI go to the broker, but a down broker never fails the command:
    the database already holds the truth and beat catches up."""

    def dispatch(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        from worker.celery import app as celery_app

        try:
            celery_app.send_task(name, args=list(args), kwargs=kwargs, retry=False)
        except Exception as exc:  # a nudge only: beat runs the job anyway
            logging.getLogger(__name__).debug("follow-up %s not sent: %s", name, exc)

    return dispatch
