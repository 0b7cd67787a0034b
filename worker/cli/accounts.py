"""Customer accounts."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import (
    JsonFlag,
    app,
    in_uow,
    run_action,
)

accounts_app = typer.Typer(no_args_is_help=True, help="Customer accounts.")
app.add_typer(accounts_app, name="accounts")


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
    company: Annotated[
        str | None, typer.Option("--company", help="Company name printed on invoices.")
    ] = None,
    finance_email: Annotated[
        str | None, typer.Option("--finance-email", help="Invoices go here when set.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an account; prints it."""
    from worker.accounts import service as accounts
    from worker.kernel.clock import now

    run_action(
        as_json,
        in_uow(
            lambda uow: accounts.create(
                uow,
                name=name,
                currency=currency,
                country=country,
                emails=email or [],
                locale=locale,
                display_currency=display_currency,
                company=company,
                finance_email=finance_email,
                now=now(),
            )
        ),
        creates_database=True,  # the first command on a new home: it may make the database
    )


@accounts_app.command("show")
def accounts_show(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Show an account with its balance, auto-reload and alert settings."""
    run_action(as_json, lambda: _show(account_id))


def _show(account_id: str) -> object:
    """On SQLite (the embedded default) the account is read without SQLAlchemy, whose
    import alone is over the 0.3 s budget (worker/accounts/embedded.py, README "CLI
    start-up"); that read answers the common case, the ORM path everything else."""
    from config import get_settings
    from worker.cli.common import sqlite_file

    path = sqlite_file(get_settings().effective_database_url)
    if path is not None:
        from worker.accounts import embedded
        from worker.kernel.clock import now

        shown = embedded.show(path, account_id, now())
        if shown is not None:
            return shown
    from worker.accounts import service as accounts

    return in_uow(lambda uow: accounts.view(accounts.get(uow.session, account_id)), wire=False)()


def _limit(value: str | None, default: int | None) -> int | None:
    """`--limit` as typed: exactly a whole number's ASCII digits, refused naming `limit`
    (exit 1) otherwise; white space around it is refused, as in amounts (issue fixred 5)."""
    if value is None:
        return default
    from worker.kernel.errors import ValidationError

    if not value.isdigit() or not value.isascii():
        raise ValidationError("limit", f"must be a whole number, got {value[:20]!r}")
    return int(value)


LIST_COLUMNS = ("id", "name", "company", "status", "suspension_reason", "balance", "currency")


@accounts_app.command("list")
def accounts_list(
    status: Annotated[str | None, typer.Option("--status", help="active or suspended.")] = None,
    search: Annotated[
        str | None,
        typer.Option("--search", help="Text in the name, company or an email address."),
    ] = None,
    limit: Annotated[str | None, typer.Option("--limit", help="At most N (1-1000, 100).")] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="The last id of the previous page.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Accounts by id; `--after` the last id printed pages on."""
    from worker.accounts import admin

    run_action(
        as_json,
        in_uow(
            lambda uow: admin.list_accounts(
                uow.session,
                status=status,
                search=search,
                limit=_limit(limit, admin.DEFAULT_LIMIT),
                after=after,
            ),
            wire=False,
        ),
        columns=LIST_COLUMNS,
    )


@accounts_app.command("update")
def accounts_update(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    company: Annotated[str | None, typer.Option("--company", help='"" clears it.')] = None,
    finance_email: Annotated[
        str | None, typer.Option("--finance-email", help='"" clears it.')
    ] = None,
    email: Annotated[
        list[str] | None,
        typer.Option("--email", help="Replaces the invoice-and-alert addresses (repeat)."),
    ] = None,
    locale: Annotated[str | None, typer.Option("--locale", help="en, ja or zh.")] = None,
    display_currency: Annotated[str | None, typer.Option("--display-currency")] = None,
    country: Annotated[str | None, typer.Option("--country", help="ISO 3166 alpha-2.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change what is given; prints the account."""
    from worker.accounts import admin
    from worker.kernel.clock import now

    given = {
        key: value
        for key, value in {
            "name": name,
            "company": company,
            "finance_email": finance_email,
            "emails": email,
            "locale": locale,
            "display_currency": display_currency,
            "country": country,
        }.items()
        if value is not None
    }
    run_action(
        as_json,
        in_uow(lambda uow: admin.update(uow, account_id=account_id, now=now(), **given)),
    )


@accounts_app.command("suspend")
def accounts_suspend(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the event).")],
    as_json: JsonFlag = False,
) -> None:
    """Operator suspension (suspension_reason admin): usage is refused; money never lifts it."""
    from worker.accounts import admin
    from worker.kernel.clock import now

    run_action(
        as_json,
        in_uow(lambda uow: admin.suspend(uow, account_id=account_id, reason=reason, now=now())),
    )


@accounts_app.command("resume")
def accounts_resume(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """End an operator suspension (the account stays suspended as depleted if its money says so)."""
    from worker.accounts import admin
    from worker.kernel.clock import now

    run_action(as_json, in_uow(lambda uow: admin.resume(uow, account_id=account_id, now=now())))
