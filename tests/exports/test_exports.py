"""Exports opened and checked row by row against the ledger and the events (real PostgreSQL):
.xlsx read back with openpyxl (and its stored XML, for exactness) and CSV, with the
display-currency columns at each row's rate; bad input refused by name, no file left."""

from __future__ import annotations

import csv
import re
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import select

from tests.cli.test_cli import check_refusal, ok_json, run
from worker.accounts import service as accounts
from worker.alerts import service as alerts
from worker.db.session import unit_of_work
from worker.exports import service as exports
from worker.exports import writers
from worker.fx import service as fx
from worker.kernel.clock import isoformat
from worker.kernel.errors import NotFound, ValidationError
from worker.kernel.money import format_amount
from worker.ledger import adjustments
from worker.ledger.models import LedgerTransaction
from worker.outbox.models import Event
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

DATA = Path(__file__).parents[1] / "fx" / "data"
T0 = datetime(2026, 11, 19, 10, 0, tzinfo=UTC)  # before the first rate (2026-11-20)


def _history(display: str = "USD") -> str:
    """An account with movements from before the first rate to 10 days after the last."""
    with unit_of_work() as uow:
        # imported after its last day (2026-11-27): an import refuses days after tomorrow
        fx.import_rates(
            uow, (DATA / "eurofxref-hist.xml").read_bytes(), now=T0 + timedelta(days=10)
        )
        account_id = accounts.create(uow, name="Export", display_currency=display, now=T0)["id"]
    steps: list[tuple[timedelta, str, str]] = [
        (timedelta(0), "adjust", "100.005"),
        (timedelta(days=1, hours=1), "debit", "0.0057"),
        (timedelta(days=7, hours=2), "debit", "0.0087"),  # 11-26: USD 1.0851
        (timedelta(days=8), "alerts", "5"),
        (timedelta(days=8, hours=3), "adjust", "-12.34"),  # 11-27: USD 1.0862
        (timedelta(days=18), "debit", "=1+1"),  # 12-07: the 11-27 rate, 10 days old: stale
    ]
    for n, (delta, what, value) in enumerate(steps):
        at = T0 + delta
        with unit_of_work() as uow:
            if what == "adjust":
                adjustments.adjust(uow, account_id=account_id, amount=value, reason="t", now=at)
            elif what == "alerts":
                alerts.configure(
                    uow, account_id=account_id, threshold=value, emails=["ops@example.com"], now=at
                )
            elif value.startswith("="):  # a description a spreadsheet would run as a formula
                usage.debit(uow, account_id=account_id, amount="1.5", reference=f"r{n}",
                            description=value, now=at)  # fmt: skip
            else:
                usage.debit(uow, account_id=account_id, amount=value, reference=f"r{n}", now=at)
    return account_id


def _ledger(account_id: str) -> list[LedgerTransaction]:
    with unit_of_work() as uow:
        rows = uow.session.scalars(
            select(LedgerTransaction)
            .where(LedgerTransaction.account_id == account_id)
            .order_by(LedgerTransaction.created_at, LedgerTransaction.id)
        ).all()
        uow.session.expunge_all()
        return list(rows)


def _export(account_id: str, kind: str, out: Path, **kwargs: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return exports.export(uow.session, kind=kind, account_id=account_id, out=out, **kwargs)


def _xlsx_rows(path: Path) -> list[list[Any]]:
    book = openpyxl.load_workbook(path, read_only=True)
    rows = [list(r) for sheet in book.worksheets for r in sheet.iter_rows(values_only=True)]
    book.close()
    width = len(rows[0])  # read-only mode drops a row's empty trailing cells
    return [r + [None] * (width - len(r)) for r in rows]


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.reader(stream))


def _expected_transactions(account_id: str) -> list[list[str]]:
    """What the file must say, from the ledger and the rates: the exact strings."""
    with unit_of_work() as uow:
        book = fx.RateBook(uow.session, "EUR", "USD", datetime(2027, 1, 1, tzinfo=UTC))
    expected = []
    for t in _ledger(account_id):
        assert t.balance_after is not None
        rate = book.at(t.created_at)
        display = (
            ["USD", "", "", "", "", ""]
            if rate is None
            else [
                "USD",
                format_amount(fx.convert(t.amount, rate.rate, "USD"), "USD"),
                format_amount(fx.convert(t.balance_after, rate.rate, "USD"), "USD"),
                f"{rate.rate:f}",
                rate.rate_date.isoformat() if rate.rate_date else "",
                "true" if rate.stale else "false",
            ]
        )
        expected.append([
            isoformat(t.created_at), t.id, t.kind, t.reference, t.description or "",
            format_amount(t.amount, "EUR"), format_amount(t.balance_after, "EUR"), "EUR",
            *display,
        ])  # fmt: skip
    return expected


def test_transactions_csv_row_by_row_against_the_ledger(tmp_path: Path) -> None:
    account_id = _history()
    done = _export(account_id, "transactions", tmp_path / "t.csv")
    rows = _csv_rows(tmp_path / "t.csv")
    assert rows[0] == exports.TRANSACTION_COLUMNS + exports.DISPLAY_COLUMNS
    expected = _expected_transactions(account_id)
    # The formula-looking description is text, neutralised for spreadsheets.
    expected[-1][4] = "'=1+1"
    assert rows[1:] == expected
    assert done["rows"] == len(expected) == 5 and done["format"] == "csv"
    # Exact and running: 0.0057 and 0.0087 as such; each balance is the last plus the amount.
    assert [r[5] for r in rows[1:]] == ["100.005", "-0.0057", "-0.0087", "-12.34", "-1.50"]
    balance = Decimal(0)
    for r in rows[1:]:
        balance += Decimal(r[5])
        assert Decimal(r[6]) == balance
    with unit_of_work() as uow:
        assert Decimal(rows[-1][6]) == accounts.get(uow.session, account_id).balance
    # The display columns: none before the first rate, then the rate of the row's day.
    assert rows[1][8:] == ["USD", "", "", "", "", ""]
    assert rows[2][11:] == ["1.0799", "2026-11-20", "false"]
    assert rows[3][11:] == ["1.0851", "2026-11-26", "false"]
    assert rows[5][11:] == ["1.0862", "2026-11-27", "true"]  # 10 days old: stale
    assert rows[3][9] == "-0.01"  # -0.0087 x 1.0851 = -0.00944... -> -0.01 (display only)


def test_transactions_xlsx_row_by_row_and_exact_numbers(tmp_path: Path) -> None:
    account_id = _history()
    out = tmp_path / "t.xlsx"
    assert _export(account_id, "transactions", out)["rows"] == 5
    rows = _xlsx_rows(out)
    assert rows[0] == exports.TRANSACTION_COLUMNS + exports.DISPLAY_COLUMNS
    expected = _expected_transactions(account_id)
    assert len(rows) == len(expected) + 1
    for got, want in zip(rows[1:], expected, strict=True):
        # Text columns as text, the formula-looking one too; numbers read back equal.
        assert [c if c is not None else "" for c in got[:5]] == want[:5]
        assert got[7:9] == want[7:9]
        for column in (5, 6, 9, 10, 11):
            if want[column]:
                assert Decimal(repr(got[column])) == Decimal(want[column])
            else:
                assert got[column] is None
        assert (got[12] or "") == want[12]
        assert got[13] == ({"true": True, "false": False}.get(want[13]))
    # Stored exactly as the ledger's decimal (openpyxl alone would write 0.0087 as
    # 0.008699999999999999), with the currency's number format.
    with zipfile.ZipFile(out) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml").decode()
        styles = archive.read("xl/styles.xml").decode()
    numbers = re.findall(r'<c r="F\d+"[^>]*t="n"[^>]*><v>([^<]*)</v>', sheet)
    assert numbers == [w[5] for w in expected]
    assert "-0.0087" in numbers and "0.008699" not in sheet
    assert 'formatCode="#,##0.00####"' in styles
    sheet_formats = openpyxl.load_workbook(out).active
    assert sheet_formats is not None
    formats = [sheet_formats.cell(row=r, column=6).number_format for r in range(2, 7)]
    # The currency's two decimals; more digits shown only where the amount has them.
    assert formats == ["#,##0.00####", "#,##0.00####", "#,##0.00####", "#,##0.00", "#,##0.00"]
    assert "<f>" not in sheet  # no formula anywhere


def test_activity_merges_money_and_events_in_time_order(tmp_path: Path) -> None:
    account_id = _history(display="EUR")  # shown in its own currency: no display columns
    for fmt in ("csv", "xlsx"):
        out = tmp_path / f"a.{fmt}"
        done = _export(account_id, "activity", out)
        rows = _csv_rows(out) if fmt == "csv" else _xlsx_rows(out)
        assert rows[0] == exports.ACTIVITY_COLUMNS
        with unit_of_work() as uow:
            events = uow.session.scalars(
                select(Event).where(Event.account_id == account_id).order_by(Event.occurred_at)
            ).all()
            event_rows = {e.id: (isoformat(e.occurred_at), e.type) for e in events}
        ledger = {t.id: (isoformat(t.created_at), t.kind) for t in _ledger(account_id)}
        assert done["rows"] == len(rows) - 1 == len(ledger) + len(event_rows)
        dates = [r[0] for r in rows[1:]]
        assert dates == sorted(dates)  # one timeline
        for r in rows[1:]:
            source = ledger if r[1] == "money" else event_rows
            assert source[r[3]] == (r[0], r[2])
        types = {r[2] for r in rows[1:] if r[1] == "event"}
        assert {"balance.adjusted", "alerts.enabled"} <= types


def test_from_and_to_select_whole_utc_days(tmp_path: Path) -> None:
    account_id = _history()
    done = _export(account_id, "transactions", tmp_path / "p.csv", since="2026-11-20",
                   until="2026-11-26")  # fmt: skip
    rows = _csv_rows(tmp_path / "p.csv")
    assert done["rows"] == 2 and [r[5] for r in rows[1:]] == ["-0.0057", "-0.0087"]
    # The running balance is the ledger's, not restarted at the period's start.
    assert rows[1][6] == "99.9993"


def test_a_long_export_continues_on_a_second_sheet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = _history()
    monkeypatch.setattr(writers, "XLSX_MAX_ROWS", 3)  # a header and two rows per sheet
    _export(account_id, "transactions", tmp_path / "s.xlsx")
    book = openpyxl.load_workbook(tmp_path / "s.xlsx", read_only=True)
    assert book.sheetnames == ["transactions", "transactions 2", "transactions 3"]
    book.close()
    rows = _xlsx_rows(tmp_path / "s.xlsx")
    assert [r[1] for r in rows if r[1] != "transaction_id"] == [t.id for t in _ledger(account_id)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fmt": "pdf"}, "format"),
        ({"since": "2026-11-31"}, "from"),
        ({"until": "27.11.2026"}, "to"),
        ({"since": "2026-11-27", "until": "2026-11-20"}, "to"),
        ({"kind": "everything"}, "kind"),
        ({"out": "missing/x.csv"}, "out"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    tmp_path: Path, kwargs: dict[str, Any], field: str
) -> None:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="Refusals", now=T0)["id"]
    out = tmp_path / str(kwargs.pop("out", "x.csv"))
    kind = str(kwargs.pop("kind", "transactions"))
    with pytest.raises(ValidationError) as refused:
        _export(account_id, kind, out, **kwargs)
    assert refused.value.field == field
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file
    with pytest.raises(NotFound):
        _export("acc_nobody", "transactions", out)


def test_cli_export_prints_path_and_rows(tmp_path: Path) -> None:
    account_id = _history()
    out = tmp_path / "cli.xlsx"
    assert ok_json("export", "transactions", account_id, "--out", str(out)) == {
        "path": str(out), "rows": 5, "format": "xlsx", "kind": "transactions",
        "account_id": account_id,
    }  # fmt: skip
    csv_out = tmp_path / "cli.txt"
    done = ok_json("export", "activity", account_id, "--out", str(csv_out), "--format", "csv",
                   "--from", "2026-11-27")  # fmt: skip
    assert done["rows"] == len(_csv_rows(csv_out)) - 1 and done["format"] == "csv"
    refused = run("export", "transactions", account_id, "--out", str(out), "--from", "x",
                  "--json")  # fmt: skip
    check_refusal(refused, "from", "invalid")


def test_progress_is_reported_while_rows_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = _history()
    monkeypatch.setattr(exports, "PROGRESS_EVERY", 2)
    seen: list[int] = []
    _export(account_id, "transactions", tmp_path / "p.xlsx", progress=seen.append)
    assert seen == [2, 4, 5]  # every 2 rows, then the total
    with unit_of_work() as uow:
        assert exports.count(uow.session, "transactions", account_id, None, None) == 5
        assert exports.count(uow.session, "activity", account_id, None, None) > 5
