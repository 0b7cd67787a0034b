"""Auto-reload settings."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import (
    JsonFlag,
    app,
    in_uow,
    run_action,
)

reload_app = typer.Typer(no_args_is_help=True, help="Auto-reload settings.")
app.add_typer(reload_app, name="auto-reload")


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
    from worker.auto_reload import configure
    from worker.kernel.clock import now

    run_action(
        as_json,
        in_uow(
            lambda uow: configure.configure(
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
    from worker.auto_reload import configure
    from worker.kernel.clock import now

    run_action(
        as_json, in_uow(lambda uow: configure.turn_off(uow, account_id=account_id, now=now()))
    )
