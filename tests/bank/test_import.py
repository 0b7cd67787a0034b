"""Statement import (camt.053 and CSV) against real PostgreSQL: good lines go in, bad ones
are reported, debits skipped, a statement imported twice or twice at once moves money once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.bank import camt
from tests.invoices import support as s
from worker.bank import statements
from worker.bank.models import BankTransfer
from worker.db.session import unit_of_work
from worker.kernel.errors import ValidationError

pytestmark = pytest.mark.integration


def _import(path: Path, fmt: str | None = None) -> dict[str, object]:
    with unit_of_work() as uow:
        return statements.import_file(uow, str(path), fmt)


def _world() -> tuple[str, str, dict[str, str]]:
    account_id = s.account(company="株式会社テスト")
    invoice = s.proforma(account_id, "100.00", s.method(account_id))
    return account_id, s.reference(account_id), invoice


def test_camt053_credits_match_debits_skip_and_bad_entries_are_reported(tmp_path: Path) -> None:
    account_id, ref, invoice = _world()
    xml = camt.statement(
        [
            camt.entry("B-1", "100.00", f"invoice {invoice['number']}"),
            camt.entry("B-2", "25.00", "", structured=ref),  # structured RF reference
            camt.entry("B-3", "10.00", "rent", debit=True),
            camt.entry("B-4", "abc", ref),  # bad amount
            camt.entry("B-5", "7.00", "nobody"),
        ]
    )
    path = tmp_path / "stmt.xml"
    path.write_text(xml, encoding="utf-8")
    result = _import(path)
    assert result["format"] == "camt053"
    assert result["transfers"] == 3 and result["matched"] == 1 and result["unapplied"] == 1
    assert result["unmatched"] == 1 and result["skipped"] == 1 and result["duplicates"] == 0
    [error] = result["errors"]  # type: ignore[misc]
    assert (
        error["field"] == "amount"
        and error["line"]
        == xml.splitlines().index(next(line for line in xml.splitlines() if "B-4" in line)) + 1
    )
    acc = s.get_account(account_id)
    assert acc.balance == Decimal("100") and acc.unapplied == Decimal("25")
    again = _import(path)  # the same statement twice: money moves once
    assert again["duplicates"] == 3 and again["matched"] == 0
    assert s.get_account(account_id).balance == Decimal("100")
    assert s.count(BankTransfer) == 3
    s.audit_ok()


def test_csv_columns_per_contract_and_line_numbers(tmp_path: Path) -> None:
    account_id, ref, invoice = _world()
    path = tmp_path / "stmt.csv"
    path.write_text(
        "bank_reference,booking_date,value_date,amount,currency,memo\n"
        f"C-1,2026-11-30,2026-11-30,100.00,EUR,{invoice['number']}\n"
        "C-2,2026-11-30,2026-11-31,5.00,EUR,x\n"
        "C-3,2026-11-30,2026-11-30,-3.00,EUR,fee\n"
        f"C-4,2026-11-30,2026-11-30,80.00,USD,{ref}\n",
        encoding="utf-8",
    )
    result = _import(path, "csv")
    assert result["matched"] == 1 and result["unmatched"] == 1 and result["skipped"] == 1
    assert result["errors"] == [
        {
            "line": 3,
            "field": "value_date",
            "message": "value_date: is not a date YYYY-MM-DD: '2026-11-31'",
        }
    ]
    assert s.get_account(account_id).balance == Decimal("100")


def test_a_doctype_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.xml"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "x">]><Document>&e;</Document>',
        encoding="utf-8",
    )
    with pytest.raises(ValidationError):
        _import(path)


def test_two_imports_of_one_statement_at_once_move_money_once(tmp_path: Path) -> None:
    """Two `balancectl bank import` processes on the same 300-entry statement."""
    ids = [s.account() for _ in range(30)]
    refs = [s.reference(a) for a in ids]
    for account_id in ids:
        s.proforma(account_id, "10.00", s.method(account_id))
    path = tmp_path / "stmt.xml"
    path.write_text(
        camt.statement(
            camt.entry(f"P-{i}", "10.00" if i < 30 else "1.00", refs[i % 30]) for i in range(300)
        ),
        encoding="utf-8",
    )
    env = {**os.environ}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "bank", "import", str(path), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out) for out, _ in outs]
    assert sum(int(r["duplicates"]) for r in results) == 300
    assert sum(int(r["matched"]) + int(r["unapplied"]) for r in results) == 300
    assert s.count(BankTransfer) == 300
    for account_id in ids:
        acc = s.get_account(account_id)
        assert acc.balance == Decimal("10") and acc.unapplied == Decimal("9")
    s.audit_ok()
