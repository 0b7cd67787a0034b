"""Invoices: list, show, PDF, pay out of band, void."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from worker.cli.common import JsonFlag, app, in_uow, run_action


class _ListByDefault(TyperGroup):
    """`balancectl invoices ID` lists the account's invoices (CONTRACT.md) beside the
    sub-commands `show`, `pdf`, `pay`, `void`: an argument that names no sub-command is
    the account id of `list`."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().resolve_command(ctx, args)


invoices_app = typer.Typer(
    cls=_ListByDefault, no_args_is_help=True, help="Invoices: one per payment."
)
app.add_typer(invoices_app, name="invoices")


@invoices_app.command("list")
def invoices_list(
    account_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """The account's invoices, oldest first (also: `balancectl invoices ID`)."""
    from worker.invoices import service as invoices

    run_action(as_json, in_uow(lambda uow: invoices.list_for(uow.session, account_id)))


@invoices_app.command("show")
def invoices_show(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID")], as_json: JsonFlag = False
) -> None:
    """One invoice."""
    from worker.invoices import service as invoices

    run_action(as_json, in_uow(lambda uow: invoices.view(invoices.get(uow.session, invoice_id))))


@invoices_app.command("pdf")
def invoices_pdf(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID")],
    out: Annotated[str, typer.Option("--out", help="File to write.")],
    as_json: JsonFlag = False,
) -> None:
    """Write the invoice's PDF; prints {path, bytes}. Refused while the invoice is pending."""
    from worker.invoices import pdf

    run_action(as_json, in_uow(lambda uow: pdf.write(uow.session, invoice_id, out)))


@invoices_app.command("pay")
def invoices_pay(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID")],
    out_of_band: Annotated[
        bool, typer.Option("--out-of-band", help="Paid outside any PSP (a cheque).")
    ] = False,
    reference: Annotated[str | None, typer.Option("--reference", help="e.g. cheque no.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """An open pro-forma paid out of band: its charge succeeds, the balance is credited and
    a final invoice issued."""
    from worker.cli.common import fail
    from worker.invoices import service as invoices
    from worker.kernel.clock import now

    if not out_of_band:
        fail("invalid", "out_of_band", "out_of_band: say --out-of-band (the only way)", as_json)
    action: Any = in_uow(lambda uow: invoices.pay_out_of_band(uow, invoice_id, reference, now()))
    run_action(as_json, action)


@invoices_app.command("void")
def invoices_void(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID")], as_json: JsonFlag = False
) -> None:
    """Void an open pro-forma; its pending charge fails."""
    from worker.invoices import service as invoices
    from worker.kernel.clock import now

    run_action(as_json, in_uow(lambda uow: invoices.void(uow, invoice_id, now())))
