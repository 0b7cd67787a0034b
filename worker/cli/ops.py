"""Operations: schema migrations, scheduled jobs run now, the worker itself."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from config import get_settings
from worker.cli.common import (
    JsonFlag,
    app,
    emit,
    ensure_schema,
    fail,
    one_line,
    run_action,
    settings_or_exit,
)
from worker.kernel import task_names

db_app = typer.Typer(no_args_is_help=True, help="Schema migrations.")
jobs_app = typer.Typer(no_args_is_help=True, help="Run a scheduled job now, in-process.")
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Create or migrate the schema."""
    from worker.db.migrate import upgrade

    def action() -> dict[str, Any]:
        upgrade()
        return {"ok": True, "revision": "head"}

    settings_or_exit(as_json)
    try:
        result = action()
    except Exception as exc:  # a migration failure is reported, not dumped
        fail(
            "migration_failed",
            "DATABASE_URL",
            f"DATABASE_URL: migration failed ({one_line(exc)})",
            as_json,
        )
    emit(result, as_json)


def job_registry() -> dict[str, tuple[str, bool]]:
    """Job name -> (task name, takes as_of). Later jobs plug in here and into worker/schedule.py."""
    return {
        "events": (task_names.EVENTS_RELAY, False),
        "mail": (task_names.MAIL_SEND_PENDING, True),
        "audit": (task_names.LEDGER_AUDIT, False),
        "sync": (task_names.PAYMENTS_SYNC_PENDING, True),
        "auto-reload": (task_names.AUTO_RELOAD_SWEEP, True),
        "alerts": (task_names.ALERTS_SCAN, True),
        "settlement": (task_names.SETTLEMENT_ROLL_FORWARD, True),
        "fees": (task_names.FEES_COLLECT, True),
    }


@jobs_app.command("run")
def jobsrun_action(
    job: Annotated[
        str,
        typer.Argument(help="auto-reload, alerts, settlement, fees, sync, events, mail or audit"),
    ],
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO-8601 with offset.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one scheduled job now, in this process."""
    registry = job_registry()
    if job not in registry:
        fail("invalid", "job", f"job: unknown job {job!r} (known: {', '.join(registry)})", as_json)

    def action() -> Any:
        from worker.celery import app as celery_app
        from worker.kernel.clock import parse_as_of

        celery_app.loader.import_default_modules()
        task_name, takes_as_of = registry[job]
        kwargs: dict[str, Any] = {}
        if as_of is not None:
            if not takes_as_of:
                parse_as_of(as_of)  # still refuse a malformed value by name
            else:
                kwargs["as_of"] = parse_as_of(as_of).isoformat()
        return celery_app.tasks[task_name](**kwargs)

    run_action(as_json, action)


@app.command("run")
def run(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Start a worker with beat on the configured services (default: embedded, no servers)."""
    settings_or_exit(False)
    settings = get_settings()
    if settings.embedded:
        settings.balance_home.mkdir(parents=True, exist_ok=True)
    ensure_schema()
    from worker.celery import app as celery_app

    where = (
        "embedded (SQLite + SQLAlchemy broker in " + str(settings.balance_home.resolve()) + ")"
        if settings.embedded
        else "configured services"
    )
    typer.echo(f"balance-worker: starting worker + beat on {where}", err=True)
    celery_app.worker_main(
        [
            "worker",
            "--beat",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency}",
            f"--queues={settings.task_queue},{settings.urgent_queue},{settings.bulk_queue},"
            f"{settings.outbox_queue}",
            f"--hostname=balance-{os.getpid()}@%h",
        ]
    )
