"""`balancectl refund`, `refunds ID` and `refunds details` as operators run them: a real
process (CONTRACT.md "Refunds"). Few processes: start-up dominates their run time."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli.test_cli import run, run_many
from tests.invoices import support as s
from tests.refunds import support as r

pytestmark = pytest.mark.integration


def _ok(*args: str) -> Any:
    done = run(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_refund_list_refusals_and_bank_details() -> None:
    account_id, charge_id = r.card_account("30.00")
    bank_account = s.account()
    invoice = s.proforma(bank_account, "40.00", s.method(bank_account))
    s.receive("40.00", invoice["number"])
    [bank_charge] = {i.charge_id for i in s.invoices_of(bank_account)}
    assert bank_charge is not None
    waiting = r.refund(bank_charge)
    assert waiting["status"] == "requires_details"

    first = _ok("refund", charge_id, "--reason", "goodwill", "--idempotency-key", "cli-1")
    assert {k: first[k] for k in ("charge_id", "amount", "currency", "status", "balance")} == {
        "charge_id": charge_id,
        "amount": "30.00",
        "currency": "EUR",
        "status": "succeeded",
        "balance": "0.00",
    }
    refused, listed, bad = run_many(
        [
            ("refund", charge_id, "--json"),
            ("refunds", account_id, "--json"),
            ("refunds", "details", waiting["refund_id"], "--iban", "DE00370400440532013000",
             "--holder", "Jane Doe", "--json"),
        ]
    )  # fmt: skip
    assert refused.returncode == 1 and "charge_id" in refused.stderr
    assert json.loads(refused.stdout)["error"]["code"] == "nothing_to_refund"
    assert [x["refund_id"] for x in json.loads(listed.stdout)] == [first["refund_id"]]
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["field"] == "iban"
    paid = _ok(
        "refunds", "details", waiting["refund_id"], "--iban", "DE89 3704 0044 0532 0130 00",
        "--holder", "Jane Doe",
    )  # fmt: skip
    assert paid["status"] == "succeeded" and paid["balance"] == "0.00"
