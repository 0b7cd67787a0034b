"""Low-balance alert settings."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import (
    JsonFlag,
    app,
    in_uow,
    run_action,
)

alerts_app = typer.Typer(no_args_is_help=True, help="Low-balance alert settings.")
app.add_typer(alerts_app, name="alerts")


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
    from worker.alerts import service as alerts
    from worker.kernel.clock import now

    run_action(
        as_json,
        in_uow(
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
    from worker.alerts import service as alerts
    from worker.kernel.clock import now

    run_action(as_json, in_uow(lambda uow: alerts.turn_off(uow, account_id=account_id, now=now())))
