"""The ECB's reference-rate files, all four shapes, read exactly; bad files refused by field."""

from __future__ import annotations

import io
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from worker.fx import ecb
from worker.kernel.errors import ValidationError

DATA = Path(__file__).parent / "data"
DAILY = {
    "USD": Decimal("1.0862"),
    "JPY": Decimal("171.94"),
    "GBP": Decimal("0.84638"),
    "IDR": Decimal("17487.21"),
}


@pytest.mark.parametrize("name", ["eurofxref-daily.xml", "eurofxref.csv"])
def test_daily_files_xml_and_csv_read_the_same(name: str) -> None:
    rates = ecb.parse((DATA / name).read_bytes())
    assert rates == {date(2026, 11, 27): DAILY}
    # Exactly as printed: the trailing zero of 0.84638 or 1.0850 is not lost, no float.
    assert all(isinstance(r, Decimal) for r in rates[date(2026, 11, 27)].values())


def test_history_xml_has_every_day() -> None:
    rates = ecb.parse((DATA / "eurofxref-hist.xml").read_bytes())
    assert sorted(rates) == [date(2026, 11, 20), date(2026, 11, 26), date(2026, 11, 27)]
    assert rates[date(2026, 11, 20)] == {"USD": Decimal("1.0799"), "GBP": Decimal("0.8450")}


def test_history_csv_skips_n_a_and_reads_retired_currencies() -> None:
    rates = ecb.parse((DATA / "eurofxref-hist.csv").read_bytes())
    assert rates[date(2026, 11, 27)] == {
        "USD": Decimal("1.0862"),
        "JPY": Decimal("171.94"),
        "GBP": Decimal("0.84638"),
    }
    assert rates[date(2007, 12, 31)]["CYP"] == Decimal("0.585274")


def test_the_ecb_zip_of_a_csv() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("eurofxref-hist.csv", (DATA / "eurofxref-hist.csv").read_bytes())
    assert len(ecb.parse(buffer.getvalue())) == 3


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"", "file", "empty"),
        (b"Currency,USD\n2026-11-27,1.08\n", "file", "header"),
        (b"Date,USD,\n2026-11-27,1.0x,\n", "rate", "line 2, USD"),
        (b"Date,USD,\n2026-11-27,-1.08,\n", "rate", "line 2, USD"),
        (b"Date,USD,\n2026-11-27,1e3,\n", "rate", "line 2, USD"),
        (b"Date,USD,\n2026-11-27,0,\n", "rate", "positive"),
        (b"Date,USD,\n2026-13-27,1.08,\n", "date", "line 2"),
        (b"Date,USD,\n27 Nov 2026,1.08,\n", "date", "line 2"),
        (b"Date,USD,\n2026-11-27,1.08,\n2026-11-27,1.09,\n", "date", "twice"),
        (b"Date,USD,XYZ,\n2026-11-27,1.08,1,\n", "currency", "XYZ"),
        (b"Date,USD,EUR,\n2026-11-27,1.08,1,\n", "currency", "EUR"),
        (b"Date,USD,GBP,\n2026-11-27,1.08\n", "file", "line 2"),
        (b"Date,USD,\n2026-11-27,1.08,2.1,3\n", "file", "line 2"),
        (b"<Envelope><Cube/></Envelope>", "file", "Cube time"),
        (b"<Envelope><Cube time='2026-11-27'><Cube currency='USD' rate='abc'/></Cube></Envelope>",
         "rate", "USD"),
        (b"<Envelope><Cube", "file", "XML"),
        (b"PK\x03\x04 not really a zip", "file", "zip"),
        (b"Date,USD,\n", "file", "no rates"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_naming_the_field(body: bytes, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ecb.parse(body)
    assert refused.value.field == field
    assert words in str(refused.value)


def test_an_entity_in_the_xml_is_not_expanded() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<Envelope><Cube time='2026-11-27'><Cube currency='USD' rate='&e;'/></Cube></Envelope>"
    )
    with pytest.raises(ValidationError) as refused:
        ecb.parse(body)
    assert refused.value.field in {"rate", "file"}
    assert "root:" not in str(refused.value)


def test_xml_comments_and_processing_instructions_are_skipped() -> None:
    daily = (DATA / "eurofxref-daily.xml").read_bytes()
    body = daily.replace(b"<Cube>", b"<!-- rates --><Cube><?ecb note?>", 1).replace(
        b"<Cube currency='JPY'", b"<!-- yen --><Cube currency='JPY'"
    )
    assert body.count(b"<!--") == 2
    assert ecb.parse(body) == {date(2026, 11, 27): DAILY}


@pytest.mark.parametrize(
    "doctype",
    [
        b"<!DOCTYPE Envelope>",
        b'<!DOCTYPE Envelope [<!ENTITY r "1.0862">]>',
        b'<!DOCTYPE Envelope SYSTEM "http://127.0.0.1:9/ecb.dtd">',
    ],
)
def test_a_doctype_is_refused_naming_file(doctype: bytes) -> None:
    body = (
        b'<?xml version="1.0"?>' + doctype + b"<Envelope><Cube time='2026-11-27'>"
        b"<Cube currency='USD' rate='1.0862'/></Cube></Envelope>"
    )
    with pytest.raises(ValidationError) as refused:
        ecb.parse(body)
    assert refused.value.field == "file" and "DOCTYPE" in str(refused.value)


def test_a_currency_twice_on_one_day_is_refused_naming_currency() -> None:
    body = (
        b"<Envelope><Cube time='2026-11-27'><Cube currency='USD' rate='1.0862'/>"
        b"<Cube currency='GBP' rate='0.84638'/><Cube currency='USD' rate='1.0999'/>"
        b"</Cube></Envelope>"
    )
    with pytest.raises(ValidationError) as refused:
        ecb.parse(body)
    assert refused.value.field == "currency" and "USD appears twice" in str(refused.value)
    # One currency on two days is a history, not a duplicate.
    gbp = b"<Cube currency='GBP' rate='0.84638'/>"
    two_days = body.replace(gbp, b"</Cube><Cube time='2026-11-26'>")
    assert ecb.parse(two_days)[date(2026, 11, 26)] == {"USD": Decimal("1.0999")}
