"""balancectl: the operators' command line (CONTRACT.md).

Every data command takes --json and then prints exactly one JSON document, the same
object the matching task returns. Exit 0 on success; 1 on a refused operation or a
bad value (one line on stderr naming the field); 2 when the command line cannot be parsed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy.exc import InterfaceError, OperationalError

from config import SettingsError, get_settings
from worker.redaction import redact

app = typer.Typer(
    name="balancectl",
    no_args_is_help=True,
    add_completion=False,
    help="Operate balance-worker: accounts, ledger, jobs and the worker itself.",
)
db_app = typer.Typer(no_args_is_help=True, help="Schema migrations.")
accounts_app = typer.Typer(no_args_is_help=True, help="Customer accounts.")
usage_app = typer.Typer(no_args_is_help=True, help="Usage debits.")
jobs_app = typer.Typer(no_args_is_help=True, help="Run a scheduled job now, in-process.")
methods_app = typer.Typer(no_args_is_help=True, help="Payment methods (PSP tokens only).")
reload_app = typer.Typer(no_args_is_help=True, help="Auto-reload settings.")
alerts_app = typer.Typer(no_args_is_help=True, help="Low-balance alert settings.")
settlement_app = typer.Typer(no_args_is_help=True, help="When PSP money becomes available.")
app.add_typer(db_app, name="db")
app.add_typer(accounts_app, name="accounts")
app.add_typer(usage_app, name="usage")
app.add_typer(jobs_app, name="jobs")
app.add_typer(methods_app, name="methods")
app.add_typer(reload_app, name="auto-reload")
app.add_typer(alerts_app, name="alerts")
app.add_typer(settlement_app, name="settlement")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
NEGATIVE_OK = {"ignore_unknown_options": True}  # so `adjust ID -5` parses as an amount


def _fail(code: str, field: str, message: str, as_json: bool) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if as_json:
        typer.echo(json.dumps({"error": {"code": code, "field": field, "message": message}}))
    raise typer.Exit(1)


def _settings_or_exit(as_json: bool) -> None:
    try:
        get_settings()
    except SettingsError as exc:
        field = str(exc).split(":", 1)[0]
        _fail("invalid_setting", field, str(exc), as_json)


def _ensure_schema() -> None:
    """The embedded default creates its own schema; a server database uses `db upgrade`."""
    if get_settings().embedded:
        from worker.db.migrate import upgrade

        upgrade()


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    _print_human(result)


def _print_human(result: Any, indent: int = 0) -> None:
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
                        _print_human(value, indent + 2)
            else:
                typer.echo(f"{pad}- {item}")
        return
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, dict | list):
                typer.echo(f"{pad}{key}:")
                _print_human(value, indent + 1)
            else:
                typer.echo(f"{pad}{key}: {'' if value is None else value}")
        return
    typer.echo(f"{pad}{result}")


def _run(as_json: bool, action: Callable[[], Any], *, write: bool = True) -> Any:
    """Run one operation in a unit of work, mapping refusals to exit 1."""
    from worker.errors import DomainError

    _settings_or_exit(as_json)
    try:
        _ensure_schema()
        result = action()
    except DomainError as exc:
        _fail(exc.code, exc.field, str(exc), as_json)
    except SettingsError as exc:
        _fail("invalid_setting", str(exc).split(":", 1)[0], str(exc), as_json)
    except (OperationalError, InterfaceError) as exc:
        _fail(
            "database_unavailable",
            "DATABASE_URL",
            f"DATABASE_URL: cannot use the database ({_one_line(exc)})",
            as_json,
        )
    _print(result, as_json)
    return result


def _one_line(exc: BaseException) -> str:
    """The first line of an error, without card numbers: the contract wants one line."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines() or [type(orig).__name__]
    return (redact(lines[0]) or "")[:200]


def _in_uow(fn: Callable[[Any], Any]) -> Callable[[], Any]:
    def action() -> Any:
        from worker.db.session import unit_of_work

        dispatch = _cli_dispatch()
        with unit_of_work(dispatch=dispatch) as uow:
            return fn(uow)

    return action


def _cli_dispatch() -> Callable[[str, tuple[Any, ...], dict[str, Any]], None]:
    """Follow-ups from the CLI go to the broker, but a down broker never fails the command:
    the database already holds the truth and beat catches up."""

    def dispatch(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        from worker.celery import app as celery_app

        try:
            celery_app.send_task(name, args=list(args), kwargs=kwargs, retry=False)
        except Exception as exc:  # a nudge only: beat runs the job anyway
            logging.getLogger(__name__).debug("follow-up %s not sent: %s", name, exc)

    return dispatch


# --- db -------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Create or migrate the schema."""
    from worker.db.migrate import upgrade

    def action() -> dict[str, Any]:
        upgrade()
        return {"ok": True, "revision": "head"}

    _settings_or_exit(as_json)
    try:
        result = action()
    except Exception as exc:  # a migration failure is reported, not dumped
        _fail(
            "migration_failed",
            "DATABASE_URL",
            f"DATABASE_URL: migration failed ({_one_line(exc)})",
            as_json,
        )
    _print(result, as_json)


# --- accounts ---------------------------------------------------------------------------


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Option("--name", help="Customer name.")],
    currency: Annotated[
        str | None, typer.Option(help="ISO 4217; DEFAULT_CURRENCY if omitted.")
    ] = None,
    country: Annotated[str, typer.Option(help="ISO 3166 alpha-2.")] = "GB",
    email: Annotated[
        list[str] | None, typer.Option("--email", help="Invoice-and-alert address (repeat).")
    ] = None,
    locale: Annotated[str, typer.Option(help="en, ja or zh.")] = "en",
    display_currency: Annotated[str | None, typer.Option("--display-currency")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an account; prints it."""
    from worker.clock import now
    from worker.services import accounts

    _run(
        as_json,
        _in_uow(
            lambda uow: accounts.create(
                uow,
                name=name,
                currency=currency,
                country=country,
                emails=email or [],
                locale=locale,
                display_currency=display_currency,
                now=now(),
            )
        ),
    )


@accounts_app.command("show")
def accounts_show(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Show an account with its balance, auto-reload and alert settings."""
    from worker.services import accounts

    _run(as_json, _in_uow(lambda uow: accounts.view(accounts.get(uow.session, account_id))))


# --- money ------------------------------------------------------------------------------


@usage_app.command("debit", context_settings=NEGATIVE_OK)
def usage_debit(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    amount: Annotated[str, typer.Argument(metavar="AMOUNT")],
    reference: Annotated[str, typer.Option("--reference", help="Idempotency reference.")],
    description: Annotated[
        str | None, typer.Option(help="Free text (card numbers are redacted).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Record usage: debit AMOUNT once per reference."""
    from worker.clock import now
    from worker.services import usage

    _run(
        as_json,
        _in_uow(
            lambda uow: usage.debit(
                uow,
                account_id=account_id,
                amount=amount,
                reference=reference,
                description=description,
                now=now(),
            )
        ),
    )


@app.command("adjust", context_settings=NEGATIVE_OK)
def adjust(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    amount: Annotated[
        str, typer.Argument(metavar="AMOUNT", help="Positive credits, negative debits.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (stored; card numbers redacted).")],
    reference: Annotated[str | None, typer.Option(help="Idempotency reference.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Manual credit (positive) or debit (negative) against the adjustments account."""
    from worker.clock import now
    from worker.services import adjustments

    _run(
        as_json,
        _in_uow(
            lambda uow: adjustments.adjust(
                uow,
                account_id=account_id,
                amount=amount,
                reason=reason,
                reference=reference,
                now=now(),
            )
        ),
    )


@app.command("ledger")
def ledger_cmd(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """The account's ledger transactions with their postings, oldest first."""
    from worker.services import ledger

    _run(as_json, _in_uow(lambda uow: ledger.list_transactions(uow.session, account_id)))


@app.command("audit")
def audit(as_json: JsonFlag = False) -> None:
    """Prove cached balances equal their postings and every transaction sums to zero."""
    from worker.services import ledger

    result = _run(as_json, _in_uow(lambda uow: ledger.audit(uow.session)))
    if not result["ok"]:
        typer.echo("error: ledger audit failed (see mismatches above)", err=True)
        raise typer.Exit(1)


# --- payment methods and charges -----------------------------------------------------------


@methods_app.command("add")
def methods_add(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    psp: Annotated[str, typer.Option("--psp", help="braintree, paypal or bank_transfer")],
    nonce: Annotated[str | None, typer.Option(help="PSP nonce, e.g. fake-valid-visa-nonce")] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default method.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Vault a payment method at the PSP; prints it (id, type, psp, display)."""
    from worker.clock import now
    from worker.services import payment_methods

    _run(
        as_json,
        _in_uow(
            lambda uow: payment_methods.add(
                uow, account_id=account_id, psp=psp, nonce=nonce, make_default=default, now=now()
            )
        ),
    )


@methods_app.command("list")
def methods_list(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """The account's payment methods."""
    from worker.services import payment_methods

    _run(as_json, _in_uow(lambda uow: payment_methods.list_for(uow.session, account_id)))


@methods_app.command("remove")
def methods_remove(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    method_id: Annotated[str, typer.Argument(metavar="METHOD_ID")],
    as_json: JsonFlag = False,
) -> None:
    """Remove a payment method (auto-reload using it turns off)."""
    from worker.clock import now
    from worker.services import payment_methods

    _run(
        as_json,
        _in_uow(
            lambda uow: payment_methods.remove(
                uow, account_id=account_id, method_id=method_id, now=now()
            )
        ),
    )


@app.command("top-up", context_settings=NEGATIVE_OK)
def top_up(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    amount: Annotated[str, typer.Argument(metavar="AMOUNT")],
    method: Annotated[
        str | None,
        typer.Option("--method", help="Payment method id (default: the account's default)."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Repeat-safe key (default: a new one).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One charge now, through the account's PSP."""
    import uuid

    from worker.services import charges

    key = idempotency_key or f"cli-{uuid.uuid4().hex}"
    _run(
        as_json,
        _in_uow(
            lambda uow: charges.top_up(
                uow,
                account_id=account_id,
                amount=amount,
                idempotency_key=key,
                payment_method_id=method,
            )
        ),
    )


@app.command("charges")
def charges_cmd(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """The account's charges, oldest first."""
    from worker.services import charges

    _run(as_json, _in_uow(lambda uow: charges.list_for(uow.session, account_id)))


@reload_app.command("set")
def auto_reload_set(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    threshold: Annotated[str, typer.Option("--threshold", help="Reload when below this.")],
    amount: Annotated[str, typer.Option("--amount", help="Reload step (charged n times).")],
    method: Annotated[
        str | None, typer.Option("--method", help="Card or PayPal method id.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Turn auto-reload on (card or PayPal only)."""
    from worker.clock import now
    from worker.services import auto_reload

    _run(
        as_json,
        _in_uow(
            lambda uow: auto_reload.configure(
                uow,
                account_id=account_id,
                threshold=threshold,
                amount=amount,
                method_id=method,
                now=now(),
            )
        ),
    )


@reload_app.command("off")
def auto_reload_off(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Turn auto-reload off."""
    from worker.clock import now
    from worker.services import auto_reload

    _run(as_json, _in_uow(lambda uow: auto_reload.turn_off(uow, account_id=account_id, now=now())))


@alerts_app.command("set")
def alerts_set(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    threshold: Annotated[str, typer.Option("--threshold", help="Alert when below this.")],
    email: Annotated[
        list[str] | None,
        typer.Option("--email", help="Replaces the invoice-and-alert addresses (repeatable)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Turn low-balance alerts on (one email per crossing, checked hourly)."""
    from worker.clock import now
    from worker.services import alerts

    _run(
        as_json,
        _in_uow(
            lambda uow: alerts.configure(
                uow, account_id=account_id, threshold=threshold, emails=email, now=now()
            )
        ),
    )


@alerts_app.command("off")
def alerts_off(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Turn low-balance alerts off (depletion notices still go out)."""
    from worker.clock import now
    from worker.services import alerts

    _run(as_json, _in_uow(lambda uow: alerts.turn_off(uow, account_id=account_id, now=now())))


@settlement_app.command("report")
def settlement_report(
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO-8601 with offset.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pending and available per PSP and currency, the reserve, and the next dates."""
    from worker.clock import parse_as_of
    from worker.services import settlement

    _run(
        as_json,
        _in_uow(lambda uow: settlement.report(uow.session, parse_as_of(as_of))),
        write=False,
    )


# --- jobs and the worker --------------------------------------------------------------------


def job_registry() -> dict[str, tuple[str, bool]]:
    """Job name -> (task name, takes as_of). Later jobs plug in here and into worker/schedule.py."""
    return {
        "events": ("balance.events.relay", False),
        "mail": ("balance.mail.send_pending", True),
        "audit": ("balance.ledger.audit", False),
        "sync": ("balance.payments.sync_pending", True),
        "auto-reload": ("balance.auto_reload.sweep", True),
        "alerts": ("balance.alerts.scan", True),
        "settlement": ("balance.settlement.roll_forward", True),
        "purge": ("balance.outbox.purge", True),
    }


@jobs_app.command("run")
def jobs_run(
    job: Annotated[
        str,
        typer.Argument(help="auto-reload, alerts, settlement, sync, events, mail, audit or purge"),
    ],
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO-8601 with offset.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one scheduled job now, in this process."""
    registry = job_registry()
    if job not in registry:
        _fail("invalid", "job", f"job: unknown job {job!r} (known: {', '.join(registry)})", as_json)

    def action() -> Any:
        from worker.celery import app as celery_app
        from worker.clock import parse_as_of

        celery_app.loader.import_default_modules()
        task_name, takes_as_of = registry[job]
        kwargs: dict[str, Any] = {}
        if as_of is not None:
            if not takes_as_of:
                parse_as_of(as_of)  # still refuse a malformed value by name
            else:
                kwargs["as_of"] = parse_as_of(as_of).isoformat()
        return celery_app.tasks[task_name](**kwargs)

    _run(as_json, action)


@app.command("run")
def run(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Start a worker with beat on the configured services (default: embedded, no servers)."""
    _settings_or_exit(False)
    settings = get_settings()
    if settings.embedded:
        settings.balance_home.mkdir(parents=True, exist_ok=True)
    _ensure_schema()
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


def main() -> None:
    app(prog_name="balancectl")


if __name__ == "__main__":  # pragma: no cover
    main()
