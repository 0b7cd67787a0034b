"""The two writers alone (no database): exact numbers, formats, text never a formula."""

from __future__ import annotations

import io
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl

from worker.exports.writers import CsvWriter, Money, XlsxWriter


def test_xlsx_numbers_are_the_exact_decimal_and_huge_ones_exact_text(tmp_path: Path) -> None:
    out = tmp_path / "w.xlsx"
    writer = XlsxWriter(out, "sheet", ["amount", "note", "rate", "flag"])
    writer.row([Money(Decimal("-0.0087"), "EUR"), '=HYPERLINK("x")', Decimal("1.0862"), True])
    writer.row([Money(Decimal("12345678901234.567891"), "EUR"), "a\x01b", None, False])
    writer.row([Money(Decimal("1500"), "JPY"), "plain", Decimal("0.920640765973"), None])
    writer.close()
    with zipfile.ZipFile(out) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml").decode()
    assert "<v>-0.0087</v>" in xml and "<v>1.0862</v>" in xml and "<v>1500</v>" in xml
    assert "<f>" not in xml  # the formula-looking note stayed text
    rows = list(openpyxl.load_workbook(out).active.iter_rows(values_only=True))  # type: ignore[union-attr]
    assert rows[1] == (-0.0087, '=HYPERLINK("x")', 1.0862, True)
    # 20 significant digits: more than a spreadsheet number holds, so exact text.
    assert rows[2] == ("12345678901234.567891", "ab", None, False)
    assert rows[3][0] == 1500 and rows[3][2] == 0.920640765973
    sheet = openpyxl.load_workbook(out).active
    assert sheet is not None
    assert sheet["A2"].number_format == "#,##0.00####"
    assert sheet["A4"].number_format == "#,##0"  # JPY: no minor unit


def test_csv_is_exact_and_neutralises_formulas() -> None:
    stream = io.StringIO()
    writer = CsvWriter(stream, ["amount", "note", "rate", "flag"])
    writer.row([Money(Decimal("-0.008700"), "EUR"), "=1+1", Decimal("1.0862"), True])
    writer.row([Money(Decimal("5"), "EUR"), "-x", None, False])
    writer.close()
    assert stream.getvalue() == (
        "amount,note,rate,flag\r\n-0.0087,'=1+1,1.0862,true\r\n5.00,'-x,,false\r\n"
    )
