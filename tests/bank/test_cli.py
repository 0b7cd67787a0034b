"""`balancectl` for invoices and bank transfers, in-process (typer's runner), one JSON
document per command, exit 1 with {"error": {code, field, message}} on a refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from worker.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def run(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bank_transfer_end_to_end_through_the_cli(tmp_path: Path) -> None:
    acc = run(
        "accounts",
        "create",
        "--name",
        "Tanaka",
        "--company",
        "株式会社タナカ",
        "--finance-email",
        "keiri@example.jp",
        "--locale",
        "ja",
    )
    assert acc["company"] == "株式会社タナカ" and acc["finance_email"] == "keiri@example.jp"
    assert acc["bank_reference"].startswith("RF") and acc["unapplied"] == "0.00"
    method = run("methods", "add", acc["id"], "--psp", "bank_transfer")
    top = run("top-up", acc["id"], "100.00", "--method", method["id"])
    assert top["status"] == "pending" and top["invoice"]["kind"] == "proforma"
    assert set(top["payment_instructions"]) >= {"beneficiary", "iban", "bic", "reference"}
    listed = run("invoices", acc["id"])
    assert [i["number"] for i in listed] == [top["invoice"]["number"]]
    assert run("invoices", "show", top["invoice"]["id"])["status"] == "open"
    written = run("invoices", "pdf", top["invoice"]["id"], "--out", str(tmp_path / "pf.pdf"))
    assert written["bytes"] == (tmp_path / "pf.pdf").stat().st_size
    paid = run("bank", "simulate", acc["id"], "130.00")
    assert paid["status"] == "partial" and paid["unapplied"] == "30.00"
    assert run("accounts", "show", acc["id"])["unapplied"] == "30.00"
    credited = run("bank", "credit", acc["id"], "30.00")
    assert credited["balance"] == "130.00"
    got = run(
        "bank",
        "receive",
        "--amount",
        "5.00",
        "--currency",
        "EUR",
        "--bank-reference",
        "X-1",
        "--memo",
        "who?",
        "--value-date",
        "2026-11-30",
    )
    assert got["status"] == "unmatched"
    assert [t["transfer_id"] for t in run("bank", "unmatched")] == [got["transfer_id"]]
    assert run("bank", "assign", got["transfer_id"], acc["id"])["status"] == "unapplied"
    assert run("jobs", "run", "invoices")["issued"] == 0
    assert run("bank", "audit")["ok"] is True


def test_refusals_name_the_field() -> None:
    err = run(
        "bank", "receive", "--amount", "1.001", "--currency", "EUR", "--bank-reference", "R", code=1
    )
    assert err["error"]["field"] == "amount"
    err = run("invoices", "show", "inv_nope", code=1)
    assert err["error"]["code"] == "not_found"
    acc = run("accounts", "create", "--name", "N")
    card = run(
        "methods", "add", acc["id"], "--psp", "braintree", "--nonce", "fake-valid-visa-nonce"
    )
    run("top-up", acc["id"], "10.00", "--method", card["id"])
    [pending] = run("invoices", acc["id"])
    err = run("invoices", "pdf", pending["id"], "--out", "/tmp/x.pdf", code=1)
    assert err["error"]["code"] == "invoice_state"
    err = run("invoices", "void", pending["id"], code=1)
    assert err["error"]["code"] == "invoice_state"
