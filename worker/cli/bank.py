"""Incoming bank transfers: receive, import a statement, suspense, unapplied funds."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import NEGATIVE_OK, JsonFlag, app, in_uow, run_action

bank_app = typer.Typer(no_args_is_help=True, help="Incoming bank transfers.")
app.add_typer(bank_app, name="bank")


@bank_app.command("receive")
def bank_receive(
    amount: Annotated[str, typer.Option("--amount", help="Decimal string, money in.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217.")],
    bank_reference: Annotated[
        str, typer.Option("--bank-reference", help="The bank's own id of the transfer.")
    ],
    memo: Annotated[str | None, typer.Option("--memo", help="Remittance text.")] = None,
    value_date: Annotated[str | None, typer.Option("--value-date", help="YYYY-MM-DD")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Record one incoming transfer and match it to invoices."""
    from worker.bank import service as bank
    from worker.kernel.clock import now

    run_action(
        as_json,
        in_uow(
            lambda uow: bank.receive_one(
                uow,
                source="cli",
                now=now(),
                amount=amount,
                currency=currency,
                bank_reference=bank_reference,
                memo=memo,
                value_date=value_date,
            )
        ),
    )


@bank_app.command("import")
def bank_import(
    path: Annotated[str, typer.Argument(metavar="FILE")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="camt053 or csv (default: by content).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """A bank statement (ISO 20022 camt.053 XML or CSV): each credit entry is received."""
    from worker.bank import statements

    run_action(as_json, in_uow(lambda uow: statements.import_file(uow, path, file_format)))


@bank_app.command("unmatched")
def bank_unmatched(as_json: JsonFlag = False) -> None:
    """Transfers no account could be found for (in suspense), oldest first."""
    from worker.bank import service as bank

    run_action(as_json, in_uow(lambda uow: bank.unmatched(uow.session)))


@bank_app.command("assign")
def bank_assign(
    transfer_id: Annotated[str, typer.Argument(metavar="TRANSFER_ID")],
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT_ID")],
    as_json: JsonFlag = False,
) -> None:
    """Give an unmatched transfer to an account (matched as if its memo named it)."""
    from worker.bank import service as bank
    from worker.kernel.clock import now

    run_action(as_json, in_uow(lambda uow: bank.assign(uow, transfer_id, account_id, now())))


@bank_app.command("credit", context_settings=NEGATIVE_OK)
def bank_credit(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    amount: Annotated[str | None, typer.Argument(metavar="[AMOUNT]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Move the account's unapplied funds (all, or AMOUNT) to its balance."""
    from worker.bank import service as bank
    from worker.kernel.clock import now

    run_action(as_json, in_uow(lambda uow: bank.credit(uow, account_id, amount, now())))


@bank_app.command("simulate")
def bank_simulate(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    amount: Annotated[str, typer.Argument(metavar="AMOUNT")],
    memo: Annotated[
        str | None, typer.Option("--memo", help="Default: the account's reference.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Sandbox: receive a transfer for the account with a made-up bank reference."""
    from worker.bank import service as bank
    from worker.kernel.clock import now

    run_action(as_json, in_uow(lambda uow: bank.simulate(uow, account_id, amount, memo, now())))


@bank_app.command("audit")
def bank_audit(as_json: JsonFlag = False) -> None:
    """Every account's cached unapplied funds equal its ledger account; exit 1 otherwise."""
    from worker.bank import service as bank
    from worker.kernel.errors import AuditFailed

    def action(uow: object) -> dict[str, object]:
        bad = bank.audit_unapplied(uow.session)  # type: ignore[attr-defined]
        if bad:
            raise AuditFailed("unapplied", f"{len(bad)} account(s) differ: {bad[:5]}")
        return {"ok": True}

    run_action(as_json, in_uow(action))
