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
    from worker.accounts import service as accounts

    run_action(as_json, in_uow(lambda uow: accounts.view(accounts.get(uow.session, account_id))))
