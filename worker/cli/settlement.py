"""Settlement: when PSP money becomes available."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import (
    JsonFlag,
    app,
    in_uow,
    run_action,
)

settlement_app = typer.Typer(no_args_is_help=True, help="When PSP money becomes available.")
app.add_typer(settlement_app, name="settlement")


@settlement_app.command("report")
def settlement_report(
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO-8601 with offset.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pending and available per PSP and currency, the reserve, and the next dates."""
    from worker.kernel.clock import parse_as_of
    from worker.settlement import service as settlement

    run_action(
        as_json,
        in_uow(lambda uow: settlement.report(uow.session, parse_as_of(as_of))),
        write=False,
    )
