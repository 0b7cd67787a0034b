"""Refunds: `refund CHARGE_ID [AMOUNT]`, `refunds ID` (list), `refunds details`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from worker.cli.common import NEGATIVE_OK, JsonFlag, app, in_uow, run_action


class _ListByDefault(TyperGroup):
    """`balancectl refunds ID` lists the account's refunds (CONTRACT.md) beside the
    subcommand `details`: an argument that names no subcommand means `list`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["list", *args]
        return super().parse_args(ctx, args)


refunds_app = typer.Typer(
    cls=_ListByDefault,
    no_args_is_help=True,
    help="Refunds: `refunds ID` lists an account's refunds; details names a bank account.",
)
app.add_typer(refunds_app, name="refunds")


@app.command("refund", context_settings=NEGATIVE_OK)
def refund(
    charge_id: Annotated[str, typer.Argument(metavar="CHARGE_ID")],
    amount: Annotated[
        str | None, typer.Argument(metavar="[AMOUNT]", help="Default: what is left to refund.")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (free text).")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Repeat-safe key (default: a new one).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Refund a succeeded charge (all that is left, or AMOUNT) from the prepaid balance."""
    from worker.refunds import refund as refunds
    from worker.refunds import service

    def act(uow: Any) -> dict[str, Any]:
        key = (
            service.caller_key(idempotency_key)
            if idempotency_key is not None
            else f"cli-{uuid.uuid4().hex}"
        )
        return refunds.refund(
            uow, charge_id=charge_id, amount=amount, reason=reason, idempotency_key=key
        )

    run_action(as_json, in_uow(act))


@refunds_app.command("list", hidden=True)
def refunds_list(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """The account's refunds, oldest first (also: `balancectl refunds ID`)."""
    from worker.refunds import service as refunds

    run_action(as_json, in_uow(lambda uow: refunds.list_for(uow.session, account_id)))


@refunds_app.command("details")
def refunds_details(
    refund_id: Annotated[str, typer.Argument(metavar="REFUND_ID")],
    iban: Annotated[str, typer.Option("--iban", help="The account to refund to (IBAN).")],
    holder: Annotated[str, typer.Option("--holder", help="The account holder's name.")],
    as_json: JsonFlag = False,
) -> None:
    """Name the bank account a bank-transfer refund is paid to; then it is paid out."""
    from worker.refunds import bank

    run_action(
        as_json,
        in_uow(lambda uow: bank.details(uow, refund_id=refund_id, iban=iban, holder=holder)),
    )
