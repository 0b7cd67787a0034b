"""Operations: schema migrations, scheduled jobs run now, the worker itself."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from config import Settings, get_settings
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
        "purge": (task_names.OUTBOX_PURGE, True),
        "invoices": (task_names.INVOICES_ISSUE_DUE, True),
        "fees": (task_names.FEES_COLLECT, True),
        "refunds": (task_names.REFUNDS_SYNC, True),
        "fx": (task_names.FX_FETCH, True),
    }


@jobs_app.command("run")
def jobs_run(
    job: Annotated[
        str,
        typer.Argument(
            help="auto-reload, alerts, settlement, fees, sync, refunds, invoices, events, mail, "
            "audit, purge or fx"
        ),
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
    """Start a worker with beat on the configured services (default: embedded, no servers).

    One per BALANCE_HOME unless the beat is RedBeat-locked on a server database: a second
    is refused at once (exit 1, naming BALANCE_HOME and the holder's pid)."""
    from worker.kernel.errors import DomainError

    settings_or_exit(False)
    settings = get_settings()
    if needs_home_lock(settings):
        from worker.cli import instance

        settings.balance_home.mkdir(parents=True, exist_ok=True)
        try:
            instance.acquire(settings.balance_home.resolve())
        except DomainError as exc:
            fail(exc.code, exc.field, str(exc), False)
        except OSError as exc:
            fail("invalid_setting", "BALANCE_HOME", f"BALANCE_HOME: cannot lock it ({exc})", False)
    try:
        ensure_schema(create=True)
    except DomainError as exc:
        fail(exc.code, exc.field, str(exc), False)
    from celery import signals

    from worker.celery import app as celery_app

    main_pid = os.getpid()

    def _beat_dies_with_worker(**_: Any) -> None:
        # Without this a `kill -9` of the worker leaves its beat running, orphaned.
        from worker.cli import instance

        instance.die_with_parent(main_pid)

    signals.beat_embedded_init.connect(_beat_dies_with_worker, weak=False)

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


def needs_home_lock(settings: Settings) -> bool:
    """True unless the database is a server and the broker Redis (RedBeat then locks beat
    across hosts, and several `balancectl run` are a fleet): the embedded database or
    broker, or a beat with no lock of its own, allow one instance per BALANCE_HOME."""
    broker = settings.broker_url or ""
    return settings.embedded or not broker.startswith(("redis://", "rediss://"))
