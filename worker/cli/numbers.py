"""Virtual numbers: `numbers rent`, `numbers ID` (list), `numbers cancel`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from worker.cli.common import JsonFlag, app, in_uow, run_action


class _ListByDefault(TyperGroup):
    """`balancectl numbers ID` lists the account's numbers (CONTRACT.md) beside the
    subcommands `rent` and `cancel`: an argument that names no subcommand means `list`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["list", *args]
        return super().parse_args(ctx, args)


numbers_app = typer.Typer(
    cls=_ListByDefault,
    no_args_is_help=True,
    help="Virtual numbers: `numbers ID` lists an account's numbers; rent and cancel.",
)
app.add_typer(numbers_app, name="numbers")


@numbers_app.command("rent")
def numbers_rent(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    msisdn: Annotated[str, typer.Option("--msisdn", help="The number, any format of COUNTRY.")],
    country: Annotated[str, typer.Option("--country", help="ISO 3166 alpha-2, e.g. GB.")],
    monthly_fee: Annotated[
        str, typer.Option("--monthly-fee", help="In the account currency, e.g. 1.50.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Rent a number; its first month is paid from the balance at once."""
    from worker.kernel.clock import now
    from worker.numbers import service as numbers

    run_action(
        as_json,
        in_uow(
            lambda uow: numbers.rent(
                uow,
                account_id=account_id,
                msisdn=msisdn,
                country=country,
                monthly_fee=monthly_fee,
                now=now(),
            )
        ),
    )


@numbers_app.command("list", hidden=True)
def numbers_list(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """The account's numbers, oldest first (also: `balancectl numbers ID`)."""
    from worker.numbers import service as numbers

    def action(uow: Any) -> Any:
        return numbers.list_numbers(uow.session, account_id)

    run_action(as_json, in_uow(action))


@numbers_app.command("cancel")
def numbers_cancel(
    number_id: Annotated[str, typer.Argument(metavar="NUMBER_ID")], as_json: JsonFlag = False
) -> None:
    """Give a number up now (nothing is refunded)."""
    from worker.kernel.clock import now
    from worker.numbers import service as numbers

    run_action(as_json, in_uow(lambda uow: numbers.cancel(uow, number_id=number_id, now=now())))
