"""Rates stored and used: `fx import`, the rate in force at a moment, a stale rate flagged,
`accounts show`'s `display`, the mails' USD figure, and the daily fetch (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine

from config import reset_settings
from tests.cli.test_cli import check_refusal, ok_json, run
from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.fx import service as fx
from worker.fx.models import FxRate
from worker.kernel.errors import ValidationError
from worker.ledger import adjustments, notices

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

DATA = Path(__file__).parent / "data"
MONDAY = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # the daily file is Friday 2026-11-27


def _import(name: str) -> dict[str, object]:
    with unit_of_work() as uow:
        return fx.import_rates(uow, (DATA / name).read_bytes(), now=MONDAY)


def test_import_both_formats_idempotently() -> None:
    assert _import("eurofxref-hist.xml") == {
        "dates": 3, "rates": 6, "first": "2026-11-20", "last": "2026-11-27",
    }  # fmt: skip
    assert _import("eurofxref-hist.csv")["rates"] == 10
    assert _import("eurofxref-hist.csv")["rates"] == 10  # again: overwritten, not doubled
    with unit_of_work() as uow:
        stored = uow.session.query(FxRate).filter_by(currency="USD").count()
        cyp = uow.session.get(FxRate, ("CYP", date(2007, 12, 31)))
    assert stored == 4  # 11-20, 11-26, 11-27, 2007-12-31
    assert cyp is not None and cyp.rate == Decimal("0.585274")


def test_the_rate_in_force_is_the_latest_at_or_before_the_moment() -> None:
    _import("eurofxref-hist.xml")
    with unit_of_work() as uow:
        s = uow.session
        friday = fx.rate_at(s, "EUR", "USD", datetime(2026, 11, 27, 9, tzinfo=UTC))
        saturday = fx.rate_at(s, "EUR", "USD", datetime(2026, 11, 28, 9, tzinfo=UTC))
        between = fx.rate_at(s, "EUR", "USD", datetime(2026, 11, 25, 23, tzinfo=UTC))
        before_any = fx.rate_at(s, "EUR", "USD", datetime(2026, 11, 19, tzinfo=UTC))
        gbp = fx.rate_at(s, "GBP", "USD", datetime(2026, 11, 27, 9, tzinfo=UTC))
        back = fx.rate_at(s, "USD", "EUR", datetime(2026, 11, 27, 9, tzinfo=UTC))
    assert friday and (friday.rate, friday.rate_date) == (Decimal("1.0862"), date(2026, 11, 27))
    assert saturday and saturday.rate_date == date(2026, 11, 27) and not saturday.stale
    assert between and (between.rate, between.rate_date) == (Decimal("1.0799"), date(2026, 11, 20))
    assert before_any is None
    # The cross: USD per GBP = (USD per EUR) / (GBP per EUR), 12 significant digits.
    assert gbp and gbp.rate == Decimal("1.2833479052")
    assert back and back.rate == Decimal("0.920640765973")


def test_a_rate_older_than_seven_days_is_flagged_stale() -> None:
    _import("eurofxref-hist.xml")
    with unit_of_work() as uow:
        week = fx.rate_at(uow.session, "EUR", "USD", datetime(2026, 12, 4, 23, tzinfo=UTC))
        later = fx.rate_at(uow.session, "EUR", "USD", datetime(2026, 12, 5, 0, 1, tzinfo=UTC))
    assert week and week.rate_date == date(2026, 11, 27) and week.stale is False  # 7 days
    assert later and later.rate_date == date(2026, 11, 27) and later.stale is True  # 8 days


def test_accounts_show_display_uses_the_rate_and_flags_it_stale() -> None:
    _import("eurofxref-daily.xml")
    with time_machine.travel(MONDAY, tick=False), unit_of_work() as uow:
        acc = accounts.create(uow, name="Shown in USD", display_currency="USD", now=MONDAY)
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=acc["id"], amount="100.005", reason="t", now=MONDAY)
    with time_machine.travel(MONDAY, tick=False), unit_of_work() as uow:
        shown = accounts.view(accounts.get(uow.session, acc["id"]))
    # 100.005 x 1.0862 = 108.625431 -> 108.63 (rounded once, half-even, display only)
    assert shown["display"] == {
        "currency": "USD", "balance": "108.63", "rate": "1.0862", "rate_date": "2026-11-27",
        "rate_stale": False, "rate_source": "ECB",
    }  # fmt: skip
    assert shown["balance"] == "100.005" and shown["currency"] == "EUR"  # charged in EUR
    with time_machine.travel(datetime(2026, 12, 8, tzinfo=UTC), tick=False), unit_of_work() as uow:
        later = accounts.view(accounts.get(uow.session, acc["id"]))
    assert later["display"]["rate_stale"] is True
    assert later["display"]["rate_date"] == "2026-11-27"


def test_usd_display_rates_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USD_DISPLAY_RATES", "EUR=1.2000")
    reset_settings()
    try:
        with unit_of_work() as uow:
            acc = accounts.create(uow, name="Fallback", display_currency="USD", now=MONDAY)
            account = accounts.get(uow.session, acc["id"])
            before = accounts.view(account)["display"]
            assert notices.about(account)["usd_rate"] == Decimal("1.2000")
        _import("eurofxref-daily.xml")
        with time_machine.travel(MONDAY, tick=False), unit_of_work() as uow:
            account = accounts.get(uow.session, acc["id"])
            assert notices.about(account)["usd_rate"] == Decimal("1.0862")  # the mails' rate
    finally:
        monkeypatch.delenv("USD_DISPLAY_RATES")
        reset_settings()
    assert before["rate"] == "1.2000" and before["rate_date"] is None
    assert before["rate_source"] == "USD_DISPLAY_RATES" and before["balance"] == "0.00"


def test_no_rate_at_all_shows_nulls_never_a_guess() -> None:
    with unit_of_work() as uow:
        acc = accounts.create(uow, name="No rate", display_currency="USD", now=MONDAY)
    assert acc["display"]["balance"] is None and acc["display"]["rate"] is None


def test_fx_import_cli_and_its_refusal(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    file = tmp_path / "eurofxref.csv"
    file.write_text(f"Date, USD, GBP, \n{today:%d} {today:%B} {today:%Y}, 1.0862, 0.84638, \n")
    assert ok_json("fx", "import", str(file)) == {
        "dates": 1, "rates": 2, "first": today.isoformat(), "last": today.isoformat(),
    }  # fmt: skip
    created = ok_json("accounts", "create", "--name", "CLI display", "--display-currency", "USD")
    shown = ok_json("accounts", "show", created["id"])
    assert shown["display"]["rate"] == "1.0862"
    assert shown["display"]["rate_date"] == today.isoformat()
    assert shown["display"]["rate_stale"] is False and shown["display"]["balance"] == "0.00"

    bad = tmp_path / "bad.csv"
    bad.write_text("Date,USD,\n2026-11-27,1,08,\n")
    check_refusal(run("fx", "import", str(bad), "--json"), "file", "invalid")
    bad.write_text("Date,USD,\n2026-11-27,1.0x,\n")
    check_refusal(run("fx", "import", str(bad), "--json"), "rate", "invalid")
    check_refusal(run("fx", "import", str(tmp_path / "none.xml"), "--json"), "file", "invalid")


def test_a_rate_dated_after_tomorrow_is_refused_naming_date() -> None:
    def csv_of(day: date) -> bytes:
        return f"Date,USD,\n{day.isoformat()},1.0862,\n".encode()

    with pytest.raises(ValidationError) as refused, unit_of_work() as uow:
        fx.import_rates(uow, csv_of(date(2026, 12, 2)), now=MONDAY)
    assert refused.value.field == "date" and "2026-12-02" in str(refused.value)
    with unit_of_work() as uow:  # a typo years ahead, in XML
        xml = (DATA / "eurofxref-daily.xml").read_bytes().replace(b"2026-11-27", b"2062-11-27")
        with pytest.raises(ValidationError) as refused:
            fx.import_rates(uow, xml, now=MONDAY)
        assert refused.value.field == "date"
        assert uow.session.query(FxRate).count() == 0
    with unit_of_work() as uow:  # tomorrow (UTC) is somewhere's today: accepted
        assert fx.import_rates(uow, csv_of(date(2026, 12, 1)), now=MONDAY)["rates"] == 1


def test_fx_import_cli_skips_comments_and_refuses_a_doctype(tmp_path: Path) -> None:
    daily = (DATA / "eurofxref-daily.xml").read_bytes()
    commented = tmp_path / "commented.xml"
    commented.write_bytes(daily.replace(b"<Cube>", b"<!-- rates --><Cube>", 1))
    assert ok_json("fx", "import", str(commented))["rates"] == 4
    doctype = tmp_path / "doctype.xml"
    doctype.write_bytes(
        daily.replace(b"<gesmes:Envelope", b'<!DOCTYPE x [<!ENTITY e "1">]><gesmes:Envelope', 1)
    )
    check_refusal(run("fx", "import", str(doctype), "--json"), "file", "invalid")
    twice = tmp_path / "twice.xml"
    twice.write_bytes(daily.replace(b"'JPY'", b"'USD'"))
    check_refusal(run("fx", "import", str(twice), "--json"), "currency", "invalid")
    future = tmp_path / "future.xml"
    future.write_bytes(daily.replace(b"2026-11-27", b"9026-11-27"))
    check_refusal(run("fx", "import", str(future), "--json"), "date", "invalid")
    with unit_of_work() as uow:
        assert uow.session.query(FxRate).count() == 4


def test_daily_fetch_from_fx_rates_url(ecb_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.fx import tasks as fx_tasks
    from worker.fx.fetch import FetchFailed

    assert fx_tasks.fetch()["skipped"] is True  # no FX_RATES_URL: nothing to do
    monkeypatch.setenv("FX_RATES_URL", f"{ecb_server}/eurofxref-daily.xml")
    reset_settings()
    try:
        result = fx_tasks.fetch(as_of=MONDAY.isoformat())
        assert (result["dates"], result["rates"], result["last"]) == (1, 4, "2026-11-27")
        assert fx_tasks.fetch()["rates"] == 4  # twice: the same rows
        monkeypatch.setenv("FX_RATES_URL", f"{ecb_server}/missing.xml")
        reset_settings()
        with pytest.raises(FetchFailed) as failed:
            fx_tasks.fetch()
        assert failed.value.field == "FX_RATES_URL" and "404" in str(failed.value)
    finally:
        monkeypatch.delenv("FX_RATES_URL")
        reset_settings()
    with unit_of_work() as uow:
        assert uow.session.query(FxRate).count() == 4
    with pytest.raises(ValidationError):
        fx_tasks.fetch(as_of="yesterday")
