"""Exports: `export transactions|activity ID --out FILE` (.xlsx or CSV, streamed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli.common import JsonFlag, app, in_uow, run_action

export_app = typer.Typer(
    no_args_is_help=True, help="Download an account's transactions or activity (.xlsx, CSV)."
)
app.add_typer(export_app, name="export")

Out = Annotated[Path, typer.Option("--out", help="The file to write (.xlsx or .csv).")]
Format = Annotated[
    str | None, typer.Option("--format", help="xlsx or csv (default: from --out's suffix).")
]
Since = Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD (UTC).")]
Until = Annotated[str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (UTC), included.")]


def _run(
    kind: str,
    account_id: str,
    out: Path,
    fmt: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    def action(uow: Any) -> Any:
        from worker.exports import service as exports

        if not sys.stderr.isatty():  # a bar only for a person watching a terminal
            return exports.export(
                uow.session, kind=kind, account_id=account_id, out=out, fmt=fmt,
                since=since, until=until,
            )  # fmt: skip
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        start, end = exports.period(since, until)
        total = None
        try:
            from worker.accounts import service as accounts

            total = exports.count(uow.session, kind, accounts.get(uow.session, account_id).id,
                                  start, end)  # fmt: skip
        except Exception:  # the export itself refuses a bad id, by name
            total = None
        with Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task(f"export {kind}", total=total)
            return exports.export(
                uow.session, kind=kind, account_id=account_id, out=out, fmt=fmt,
                since=since, until=until, progress=lambda done: bar.update(task, completed=done),
            )  # fmt: skip

    run_action(as_json, in_uow(action), write=False)


@export_app.command("transactions")
def export_transactions(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    out: Out,
    fmt: Format = None,
    since: Since = None,
    until: Until = None,
    as_json: JsonFlag = False,
) -> None:
    """Every money movement of the account with the running balance; prints `{path, rows}`."""
    _run("transactions", account_id, out, fmt, since, until, as_json)


@export_app.command("activity")
def export_activity(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    out: Out,
    fmt: Format = None,
    since: Since = None,
    until: Until = None,
    as_json: JsonFlag = False,
) -> None:
    """Everything that happened on the account (money, methods, settings, alerts,
    suspensions, invoices, numbers); prints `{path, rows}`."""
    _run("activity", account_id, out, fmt, since, until, as_json)
