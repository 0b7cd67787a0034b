"""Money on the ledger: usage debits, adjustments, the ledger itself, the audit."""

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

usage_app = typer.Typer(no_args_is_help=True, help="Usage debits.")
app.add_typer(usage_app, name="usage")


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
    from worker.kernel.clock import now
    from worker.usage import service as usage

    run_action(
        as_json,
        in_uow(
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
    from worker.kernel.clock import now
    from worker.ledger import adjustments

    run_action(
        as_json,
        in_uow(
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


LEDGER_COLUMNS = (
    "created_at",
    "id",
    "kind",
    "reference",
    "amount",
    "currency",
    "balance_after",
    "description",
)


@app.command("ledger")
def ledger_cmd(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    limit: LimitOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """The account's ledger transactions with their postings, oldest first (a table; --json
    has the postings)."""
    from worker.ledger import queries

    run_action(
        as_json,
        in_uow(
            lambda uow: queries.list_transactions(uow.session, account_id, limit, since, until),
            wire=False,
        ),
        columns=LEDGER_COLUMNS,
    )


@app.command("audit")
def audit(as_json: JsonFlag = False) -> None:
    """Prove cached balances equal their postings and every transaction sums to zero."""
    from worker.ledger import service as ledger

    result = run_action(as_json, in_uow(lambda uow: ledger.audit(uow.session)))
    if not result["ok"]:
        typer.echo("error: ledger audit failed (see mismatches above)", err=True)
        raise typer.Exit(1)
