"""`balancectl refund`, `refunds ID` and `refunds details` through the CLI app (in-process,
as tests/bank/test_cli.py; the process-level contract is tests/cli/test_cli.py's)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.invoices import support as s
from tests.refunds import support as r
from worker.cli import app

pytestmark = pytest.mark.integration

runner = CliRunner()


def run(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_refund_list_refusals_and_bank_details() -> None:
    account_id, charge_id = r.card_account("30.00")
    for generated in ("cli-1", "task-0b1f", " task-x"):  # the prefixes of generated keys
        taken = run("refund", charge_id, "10.00", "--idempotency-key", generated, code=1)
        assert taken["error"]["field"] == "idempotency_key"
    assert run("refunds", account_id) == []  # nothing written
    first = run("refund", charge_id, "10.00", "--reason", "goodwill", "--idempotency-key", "my-1")
    assert {k: first[k] for k in ("charge_id", "amount", "currency", "status", "balance")} == {
        "charge_id": charge_id,
        "amount": "10.00",
        "currency": "EUR",
        "status": "succeeded",
        "balance": "20.00",
    }
    assert run("refund", charge_id, "10.00", "--idempotency-key", "my-1") == first
    rest = run("refund", charge_id)  # no AMOUNT: what is left
    assert (rest["amount"], rest["balance"]) == ("20.00", "0.00")
    refused = run("refund", charge_id, code=1)
    assert refused["error"]["code"] == "nothing_to_refund"
    assert refused["error"]["field"] == "charge_id"
    over = run("refund", "ch_nope", "1.00", code=1)
    assert over["error"] == {**over["error"], "code": "not_found", "field": "charge_id"}
    listed = run("refunds", account_id)
    assert [x["refund_id"] for x in listed] == [first["refund_id"], rest["refund_id"]]
    assert {x["balance"] for x in listed} == {"0.00"}

    bank_account = s.account()
    invoice = s.proforma(bank_account, "40.00", s.method(bank_account))
    s.receive("40.00", invoice["number"])
    [bank_charge] = {i.charge_id for i in s.invoices_of(bank_account)}
    assert bank_charge is not None
    waiting = run("refund", bank_charge)
    assert waiting["status"] == "requires_details"
    bad = run(
        "refunds", "details", waiting["refund_id"], "--iban", "DE00370400440532013000",
        "--holder", "Jane Doe", code=1,
    )  # fmt: skip
    assert bad["error"]["field"] == "iban"
    paid = run(
        "refunds", "details", waiting["refund_id"], "--iban", "DE89 3704 0044 0532 0130 00",
        "--holder", "Jane Doe",
    )  # fmt: skip
    assert paid["status"] == "succeeded" and paid["balance"] == "0.00"
    s.audit_ok()
