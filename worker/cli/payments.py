"""Payment methods, top-ups and charges."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import (
    NEGATIVE_OK,
    JsonFlag,
    LimitOpt,
    SinceOpt,
    UntilOpt,
    app,
    in_uow,
    run_action,
)

methods_app = typer.Typer(no_args_is_help=True, help="Payment methods (PSP tokens only).")
app.add_typer(methods_app, name="methods")


@methods_app.command("add")
def methods_add(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    psp: Annotated[
        str, typer.Option("--psp", help="braintree, paypal, bank_transfer or wechat_pay")
    ],
    nonce: Annotated[str | None, typer.Option(help="PSP nonce, e.g. fake-valid-visa-nonce")] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Make it the default (card or PayPal only).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Vault a payment method at the PSP; prints it (id, type, psp, display)."""
    from worker.kernel.clock import now
    from worker.payment_methods import service as payment_methods

    run_action(
        as_json,
        in_uow(
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
    from worker.payment_methods import service as payment_methods

    run_action(as_json, in_uow(lambda uow: payment_methods.list_for(uow.session, account_id)))


@methods_app.command("remove")
def methods_remove(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    method_id: Annotated[str, typer.Argument(metavar="METHOD_ID")],
    as_json: JsonFlag = False,
) -> None:
    """Remove a payment method; says whether auto-reload (which used it) was turned off
    (`auto_reload_disabled`) and what the default is now (`default_payment_method_id`)."""
    from worker.kernel.clock import now
    from worker.payment_methods import service as payment_methods

    run_action(
        as_json,
        in_uow(
            lambda uow: payment_methods.remove(
                uow, account_id=account_id, method_id=method_id, now=now()
            )
        ),
    )


@methods_app.command("set-default")
def methods_set_default(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    method_id: Annotated[str, typer.Argument(metavar="METHOD_ID")],
    as_json: JsonFlag = False,
) -> None:
    """Make a card or PayPal method the default (a bank transfer is refused: name it with
    `top-up --method`)."""
    from worker.kernel.clock import now
    from worker.payment_methods import service as payment_methods

    run_action(
        as_json,
        in_uow(
            lambda uow: payment_methods.set_default(
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

    from worker.charges import top_up as top_ups

    key = idempotency_key or f"cli-{uuid.uuid4().hex}"
    run_action(
        as_json,
        in_uow(
            lambda uow: top_ups.top_up(
                uow,
                account_id=account_id,
                amount=amount,
                idempotency_key=key,
                payment_method_id=method,
            )
        ),
    )


CHARGE_COLUMNS = (
    "created_at",
    "id",
    "amount",
    "currency",
    "status",
    "purpose",
    "psp",
    "decline_code",
    "settlement_status",
    "available_on",
)


@app.command("charges")
def charges_cmd(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    limit: LimitOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """The account's charges, oldest first (`--limit` keeps the newest N)."""
    from worker.charges import engine as charges

    run_action(
        as_json,
        in_uow(lambda uow: charges.list_for(uow.session, account_id, limit, since, until)),
        columns=CHARGE_COLUMNS,
    )
