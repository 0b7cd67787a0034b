"""The ECB's euro foreign exchange reference rates, read from the files the ECB publishes.

https://www.ecb.europa.eu/stats/policy_and_exchange_rates/euro_reference_exchange_rates/
Every figure is units of a currency for 1 EUR. Four shapes, all read by `parse`:

- XML, daily (`eurofxref-daily.xml`) and history (`eurofxref-hist.xml`, `-hist-90d.xml`):
  `<gesmes:Envelope><Cube><Cube time='2024-06-28'><Cube currency='USD' rate='1.0705'/>...`
  (one `Cube time` per day, newest first).
- CSV, daily (`eurofxref.csv`, in `eurofxref.zip`): a header `Date, USD, JPY, ...,` and one
  row `28 June 2024, 1.0705, 171.94, ...,` (a space after each comma, a trailing comma).
- CSV, history (`eurofxref-hist.csv`, in `eurofxref-hist.zip`): `Date,USD,JPY,BGN,CYP,...,`
  then `2024-06-28,1.0705,171.94,1.9558,N/A,...,` per day; `N/A` (or nothing) where a
  currency had no rate that day (not yet, or no longer, quoted).
- Either CSV inside the ECB's `.zip`.

Nothing is rounded: a rate is kept as the decimal the file prints. A bad file is refused
whole (ValidationError naming the field: `file`, `date`, `currency` or `rate`, with the
line), so an import never stores half a file: a day or a currency of a day given twice, an
XML DOCTYPE (entity declarations; entities are never resolved either). XML comments and
processing instructions are skipped.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import date
from decimal import Decimal

from lxml import etree

from worker.kernel.errors import ValidationError
from worker.kernel.money import is_currency

# day -> currency -> units per 1 EUR
Rates = dict[date, dict[str, Decimal]]

# The ECB prints plain decimals; up to 10 places is what the table stores (ExactRate).
_RATE_RE = re.compile(r"^[0-9]{1,14}(\.[0-9]{1,10})?$")
_MISSING = {"", "N/A"}
# English month names, spelt out here so parsing never depends on the process locale.
_MONTHS = {
    name: number
    for number, name in enumerate(
        (
            "January", "February", "March", "April", "May", "June", "July", "August",
            "September", "October", "November", "December",
        ),
        start=1,
    )
}  # fmt: skip
MAX_BYTES = 64 * 1024 * 1024  # the full history is ~2 MB of CSV; anything far larger is not it


def parse(data: bytes) -> Rates:
    """The rates in an ECB file (XML, CSV or the ECB's zip of a CSV), by day and currency.

    `data`: the file's bytes. Returns {day: {currency: units per 1 EUR}} (Decimal, as
    printed). Raises ValidationError naming `file` (not an ECB file, empty, unreadable),
    `date`, `currency` or `rate` (with the line or day), and returns nothing then."""
    if len(data) > MAX_BYTES:
        raise ValidationError("file", f"is larger than {MAX_BYTES // (1024 * 1024)} MB")
    if data.startswith(b"PK"):
        data = _unzip(data)
    body = data.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not body:
        raise ValidationError("file", "is empty")
    rates = _parse_xml(body) if body.startswith(b"<") else _parse_csv(body)
    if not any(rates.values()):
        raise ValidationError("file", "holds no rates")
    return {day: by_currency for day, by_currency in rates.items() if by_currency}


def _unzip(data: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith((".csv", ".xml"))]
            if len(names) != 1:
                raise ValidationError("file", f"a zip must hold one .csv or .xml, not {names}")
            info = archive.getinfo(names[0])
            if info.file_size > MAX_BYTES:
                raise ValidationError("file", f"{names[0]} is too large to be an ECB file")
            return archive.read(info)
    except zipfile.BadZipFile as exc:
        raise ValidationError("file", f"is not a readable zip: {exc}") from None


def _rate(raw: str, where: str) -> Decimal:
    if not _RATE_RE.fullmatch(raw):
        raise ValidationError("rate", f"{where}: {raw[:40]!r} is not a positive decimal")
    rate = Decimal(raw)
    if rate <= 0:
        raise ValidationError("rate", f"{where}: must be positive, not {raw!r}")
    return rate


def _currency(raw: str, where: str) -> str:
    code = raw.strip()
    if not re.fullmatch(r"[A-Z]{3}", code) or not is_currency(code):
        raise ValidationError("currency", f"{where}: {code[:10]!r} is not an ISO 4217 code")
    if code == "EUR":  # every rate is per 1 EUR: a EUR column is not the ECB's file
        raise ValidationError("currency", f"{where}: EUR cannot be quoted against itself")
    return code


def _day(raw: str, where: str) -> date:
    text = raw.strip()
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            return date.fromisoformat(text)
        match = re.fullmatch(r"([0-9]{1,2}) ([A-Z][a-z]+) ([0-9]{4})", text)
        if match and match.group(2) in _MONTHS:
            day, month, year = match.groups()
            return date(int(year), _MONTHS[month], int(day))
    except ValueError:
        pass
    raise ValidationError(
        "date", f"{where}: {text[:40]!r} is not a date (YYYY-MM-DD or '28 June 2024')"
    )


def _parse_xml(body: bytes) -> Rates:
    # A file from the internet: no entities, no network, no DTD, no billion laughs.
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise ValidationError("file", f"is not well-formed XML: {exc}") from None
    # The ECB's files declare nothing: a DOCTYPE (entities, an external DTD) is not one of
    # them, and refusing it whole beats judging what an unexpanded entity left behind.
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise ValidationError("file", "has a DOCTYPE (entity declarations): not the ECB's XML")
    # iter(etree.Element): elements only; a comment's or processing instruction's tag is
    # a function, which QName refuses (ValueError).
    days = [
        el
        for el in root.iter(etree.Element)
        if etree.QName(el).localname == "Cube" and "time" in el.attrib
    ]
    if not days:
        raise ValidationError("file", "has no <Cube time=...>: not the ECB's eurofxref XML")
    rates: Rates = {}
    for cube in days:
        day = _day(str(cube.get("time")), f"line {cube.sourceline}")
        if day in rates:
            raise ValidationError("date", f"line {cube.sourceline}: {day} appears twice")
        by_currency: dict[str, Decimal] = {}
        seen: set[str] = set()  # with the N/A ones, which by_currency leaves out
        for child in cube:
            if not isinstance(child.tag, str):  # comments and processing instructions
                continue
            where = f"line {child.sourceline}"
            if child.get("currency") is None or child.get("rate") is None:
                raise ValidationError("file", f"{where}: a Cube needs currency= and rate=")
            code = _currency(str(child.get("currency")), where)
            if code in seen:  # as the CSV header: never let the last figure silently win
                raise ValidationError("currency", f"{where}: {code} appears twice on {day}")
            seen.add(code)
            raw = str(child.get("rate")).strip()
            if raw in _MISSING:
                continue
            by_currency[code] = _rate(raw, f"{where}, {code}")
        rates[day] = by_currency
    return rates


def _parse_csv(body: bytes) -> Rates:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("file", f"is neither XML nor UTF-8 CSV: {exc}") from None
    rows = csv.reader(io.StringIO(text))
    header = next(rows, [])
    if not header or header[0].strip() != "Date":
        raise ValidationError(
            "file", "the first line must be the ECB's header `Date,USD,...` (or XML)"
        )
    columns = [c.strip() for c in header[1:]]
    while columns and not columns[-1]:  # the ECB ends every line with a comma
        columns.pop()
    codes = [_currency(code, f"line 1, column {i + 2}") for i, code in enumerate(columns)]
    if len(set(codes)) != len(codes):
        raise ValidationError("currency", "line 1: a currency appears twice in the header")
    rates: Rates = {}
    for row in rows:
        line = rows.line_num
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        while len(cells) > len(codes) + 1 and not cells[-1]:
            cells.pop()
        if len(cells) != len(codes) + 1:
            raise ValidationError(
                "file", f"line {line}: {len(cells)} cells where the header has {len(codes) + 1}"
            )
        day = _day(cells[0], f"line {line}")
        if day in rates:
            raise ValidationError("date", f"line {line}: {day} appears twice")
        rates[day] = {
            code: _rate(raw, f"line {line}, {code}")
            for code, raw in zip(codes, cells[1:], strict=True)
            if raw not in _MISSING
        }
    return rates
