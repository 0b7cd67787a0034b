"""Two file writers with one interface: CSV, and .xlsx through openpyxl's write-only mode.

Both stream: a row is written when it is given and never kept, so memory stays bounded
whatever the row count (openpyxl's write-only sheet goes to a temporary file, zipped at
`close`). A row is a list of cell values:

- `str` text, `None` empty;
- `Money(amount, currency)`: exact. CSV prints the canonical decimal string (at least the
  currency's minor digits, up to 6, never rounded: worker/kernel/money.format_amount).
  .xlsx writes it as a number whose stored text *is* that decimal string, with the
  currency's number format (`#,##0.00`, or `#,##0.00####` when it has sub-cent digits).
  openpyxl would write a Decimal through `"%.16g" % value`, i.e. a float: 0.0087 came out
  as 0.008699999999999999; so the cell gets the exact text with type `n` instead. A figure
  with more than 15 significant digits (beyond what a spreadsheet number holds) is written
  as text, exact, rather than rounded by the spreadsheet;
- `Decimal` (a rate): the same exact number, general format;
- `bool`: TRUE/FALSE in .xlsx, `true`/`false` in CSV.

Text is never a formula: in .xlsx every text cell is typed `s` (openpyxl would make
`=cmd|...` a formula), and in CSV a text starting with `= + - @` or a tab gets a leading
`'` (OWASP's CSV-injection advice), since spreadsheets evaluate those when they open it.
"""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from worker.kernel.money import exponent, format_amount

# .xlsx sheets hold 1,048,576 rows: a longer export continues on "<title> 2", "<title> 3".
XLSX_MAX_ROWS = 1_048_576
# XML 1.0 cannot carry C0 controls (except tab and newlines): dropped from .xlsx text.
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SPREADSHEET_DIGITS = 15


class Money(NamedTuple):
    """An amount and its currency: written exactly, in the currency's format."""

    amount: Decimal
    currency: str


Value = str | Money | Decimal | bool | None


class Writer(Protocol):
    def row(self, values: list[Value]) -> None: ...

    def close(self) -> None: ...


class CsvWriter:
    """UTF-8 CSV with a header row; `\\r\\n` line ends (RFC 4180), every field as text."""

    def __init__(self, stream: IO[str], header: list[str]) -> None:
        self._csv = csv.writer(stream, lineterminator="\r\n")
        self._csv.writerow(header)

    def row(self, values: list[Value]) -> None:
        self._csv.writerow([_csv_text(v) for v in values])

    def close(self) -> None:
        pass


def _csv_text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Money):
        return format_amount(value.amount, value.currency)
    if isinstance(value, Decimal):
        return f"{value:f}"
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _formats(currency: str) -> tuple[str, str]:
    """The currency's number format, and the one for figures with sub-minor-unit digits."""
    exp = exponent(currency)
    narrow = "#,##0" + ("." + "0" * exp if exp else "")
    wide = "#,##0." + "0" * exp + "#" * (6 - exp)
    return narrow, wide


class XlsxWriter:
    """One workbook, one sheet (more past XLSX_MAX_ROWS), header row bold-free and frozen."""

    def __init__(self, path: Path, title: str, header: list[str]) -> None:
        self._path = path
        self._title = title
        self._header = header
        self._book = Workbook(write_only=True)
        self._sheets = 0
        self._rows_in_sheet = 0
        # One reusable cell per (column, style): openpyxl writes a row as it is appended,
        # so a cell may be refilled for the next row; a cell per value would be garbage.
        self._cells: dict[tuple[int, str], Any] = {}
        self._currency_formats: dict[str, tuple[int, str, str]] = {}
        self._new_sheet()

    def _new_sheet(self) -> None:
        self._sheets += 1
        title = self._title if self._sheets == 1 else f"{self._title} {self._sheets}"
        self._sheet = self._book.create_sheet(title=title)
        self._sheet.freeze_panes = "A2"
        self._sheet.append([self._text_cell(-1 - i, h) for i, h in enumerate(self._header)])
        self._rows_in_sheet = 1

    def _cell(self, column: int, style: str) -> Any:
        key = (column, style)
        cell = self._cells.get(key)
        if cell is None:
            cell = WriteOnlyCell(self._sheet)
            if style not in ("text", "general"):
                cell.number_format = style
            self._cells[key] = cell
        cell.parent = self._sheet
        return cell

    def _formats(self, currency: str) -> tuple[int, str, str]:
        found = self._currency_formats.get(currency)
        if found is None:
            found = self._currency_formats[currency] = (exponent(currency), *_formats(currency))
        return found

    def _text_cell(self, column: int, text: str) -> Any:
        cell = self._cell(column, "text")
        cell._value = _ILLEGAL_XML.sub("", text)  # typed below: never read as a formula
        cell.data_type = "s"
        return cell

    def _number_cell(self, column: int, text: str, style: str) -> Any:
        if len(text.replace("-", "").replace(".", "").lstrip("0")) > _SPREADSHEET_DIGITS:
            return self._text_cell(column, text)
        cell = self._cell(column, style)
        cell._value = text  # the exact decimal text, stored as the number (see above)
        cell.data_type = "n"
        return cell

    def row(self, values: list[Value]) -> None:
        if self._rows_in_sheet >= XLSX_MAX_ROWS:
            self._new_sheet()
        cells: list[Any] = []
        for column, value in enumerate(values):
            if value is None:
                cells.append(None)
            elif isinstance(value, bool):
                cells.append(value)
            elif isinstance(value, Money):
                text = format_amount(value.amount, value.currency)
                minor, narrow, wide = self._formats(value.currency)
                style = wide if len(text.partition(".")[2]) > minor else narrow
                cells.append(self._number_cell(column, text, style))
            elif isinstance(value, Decimal):
                cells.append(self._number_cell(column, f"{value:f}", "general"))
            elif value.startswith("=") or _ILLEGAL_XML.search(value):
                cells.append(self._text_cell(column, value))
            else:
                cells.append(value)  # plain text: openpyxl types it `s` itself
        self._sheet.append(cells)
        self._rows_in_sheet += 1

    def close(self) -> None:
        self._book.save(self._path)
