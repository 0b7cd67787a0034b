"""Settlement timing from seed 004 (Stripe's balances and settlement timing page).

Every expected date below was counted by hand on a calendar; the comments show the count.
Holidays used (from the `holidays` package): US 2026-11-26 Thanksgiving, 2026-12-25
Christmas; GB 2026-12-25, 2026-12-28 Boxing Day (observed); DE 2026-04-03 Good Friday,
2026-04-06 Easter Monday; IN 2026-03-04 Holi; JP 2026-03-20 Vernal Equinox, 2026-04-29
Showa Day, 2026-05-04/05/06 Golden Week, 2026-11-23 Labour Thanksgiving Day.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import holidays
import pytest

from worker.settlement import timing as st
from worker.settlement.timing import (
    MerchantAccount,
    SettlementConfigError,
    Timing,
    TimingTable,
    WeeklyRule,
    available_on,
    load_timing,
    parse_merchant_accounts,
)

# The seed's country table, in its order, with the English names the data file must carry.
SEED_COUNTRIES = {
    "AU": "Australia",
    "AT": "Austria",
    "BE": "Belgium",
    "BG": "Bulgaria",
    "BR": "Brazil",
    "CA": "Canada",
    "HR": "Croatia",
    "CY": "Cyprus",
    "CZ": "Czech Republic",
    "DK": "Denmark",
    "EE": "Estonia",
    "FI": "Finland",
    "FR": "France",
    "DE": "Germany",
    "GI": "Gibraltar",
    "GR": "Greece",
    "HK": "Hong Kong",
    "HU": "Hungary",
    "IN": "India",
    "IE": "Ireland",
    "IT": "Italy",
    "JP": "Japan",
    "LV": "Latvia",
    "LI": "Liechtenstein",
    "LT": "Lithuania",
    "LU": "Luxembourg",
    "MY": "Malaysia",
    "MT": "Malta",
    "MX": "Mexico",
    "NL": "Netherlands",
    "NZ": "New Zealand",
    "NO": "Norway",
    "PL": "Poland",
    "PT": "Portugal",
    "RO": "Romania",
    "SG": "Singapore",
    "SK": "Slovakia",
    "SI": "Slovenia",
    "ES": "Spain",
    "SE": "Sweden",
    "CH": "Switzerland",
    "TH": "Thailand",
    "AE": "United Arab Emirates",
    "GB": "United Kingdom",
    "US": "United States",
}
# Rows reading "7 暦日 | 3 営業日": first payout 7 calendar days, later payouts 3 business days.
SEVEN_THEN_THREE = [
    "AT", "BE", "BG", "CA", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GI", "GR", "HU",
    "IE", "IT", "LV", "LI", "LT", "LU", "MT", "MX", "NL", "NO", "PL", "PT", "RO", "SK", "SI",
    "ES", "SE", "CH", "GB",
]  # fmt: skip

CAL = "calendar"
BUS = "business"
# code -> (first, default, international, per-method variants, weekly)
EXPECTED_ROWS: dict[str, tuple[Any, ...]] = {
    **{code: (Timing(7, CAL), Timing(3, BUS), None, {}, None) for code in SEVEN_THEN_THREE},
    "AU": (None, Timing(2, BUS), None, {}, None),
    "BR": (
        None,
        Timing(30, CAL),
        Timing(5, CAL),
        {"boleto": Timing(2, BUS), "pix": Timing(2, BUS)},
        None,
    ),
    "HK": (None, Timing(7, CAL), None, {}, None),
    "IN": (None, Timing(2, BUS), Timing(5, BUS), {}, None),
    "JP": (None, None, None, {}, WeeklyRule(4)),
    "MY": (None, Timing(7, CAL), None, {}, None),
    "NZ": (None, Timing(4, BUS), None, {}, None),
    "SG": (None, Timing(7, CAL), None, {}, None),
    "TH": (None, Timing(7, BUS), None, {}, None),
    "AE": (None, Timing(5, BUS), None, {}, None),
    "US": (None, Timing(2, BUS), None, {}, None),
}
SEED_METHODS = {
    "ach_debit": Timing(4, BUS),
    "sepa_debit": Timing(6, BUS),
    "bacs_debit": Timing(4, BUS),
    "au_becs_debit": Timing(2, BUS),
    "nz_becs_debit": Timing(2, BUS),
    "ca_pad": Timing(5, BUS),
}


@pytest.fixture(scope="module")
def table() -> TimingTable:
    return load_timing()


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def merchant(country: str, **overrides: Any) -> MerchantAccount:
    fields: dict[str, Any] = {"psp": "braintree", "currency": "EUR", "country": country}
    if country == "JP":
        fields.update(currency="JPY", timezone="Asia/Tokyo", payout_weekday=4)
    fields.update(overrides)
    return MerchantAccount(**fields)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "operator_timing.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the data


def test_every_seed_country_is_in_the_data_with_its_name(table: TimingTable) -> None:
    assert len(SEED_COUNTRIES) == 45
    assert set(EXPECTED_ROWS) == set(SEED_COUNTRIES)
    assert set(table.countries) == set(SEED_COUNTRIES)
    assert {code: row.name for code, row in table.countries.items()} == SEED_COUNTRIES


@pytest.mark.parametrize("code", sorted(SEED_COUNTRIES))
def test_country_row_matches_the_seed(table: TimingTable, code: str) -> None:
    row = table.countries[code]
    got = (row.first, row.default, row.international, dict(row.methods), row.weekly)
    assert got == EXPECTED_ROWS[code]
    # The installed holidays package knows every seed country: no fallback calendar needed.
    assert row.holiday_calendar == code
    assert row.source == st.PACKAGED


def test_method_table_matches_the_seed_plus_bank_transfer(table: TimingTable) -> None:
    got = {name: row.timing for name, row in table.methods.items()}
    assert got == {**SEED_METHODS, "bank_transfer": Timing(0, CAL)}


# --------------------------------------------------------------------------- the calculator

CASES = [
    # id, merchant country, merchant overrides, method, customer, succeeded_at, expected, rule
    # Seed: a US card payment on Monday is available on Wednesday (2 business days).
    ("us-seed-monday", "US", {}, "card", "US", "2026-03-09T15:00:00+00:00", "2026-03-11",
     "US 2 business days"),
    # Thu 12-24 day 0; Fri 25 Christmas; Mon 28 = 1; Tue 29 = 2.
    ("us-christmas", "US", {}, "card", "US", "2026-12-24T15:00:00+00:00", "2026-12-29",
     "US 2 business days"),
    # Wed 11-25 day 0; Thu 26 Thanksgiving; Fri 27 = 1; Mon 30 = 2.
    ("us-thanksgiving", "US", {}, "card", "US", "2026-11-25T15:00:00+00:00", "2026-11-30",
     "US 2 business days"),
    ("us-paypal-like-card", "US", {}, "paypal", "US", "2026-12-24T15:00:00+00:00", "2026-12-29",
     "US 2 business days"),
    # Seed: with business days a Saturday payment has Monday 03-09 as day 0: Tue 1, Wed 2.
    ("us-saturday-business", "US", {}, "card", "US", "2026-03-07T15:00:00+00:00", "2026-03-11",
     "US 2 business days"),
    # Seed: with calendar days the Saturday itself is day 0: Sat 03-07 + 7 = Sat 03-14.
    ("sg-saturday-calendar", "SG", {}, "card", "SG", "2026-03-07T10:00:00+00:00", "2026-03-14",
     "SG 7 calendar days"),
    ("gb-first-saturday", "GB", {"first_payout_done": False}, "card", "GB",
     "2026-03-07T10:00:00+00:00", "2026-03-14", "GB first payout 7 calendar days"),
    # Saturday: day 0 Mon 03-09; Tue 1, Wed 2, Thu 3.
    ("gb-later-saturday", "GB", {}, "card", "GB", "2026-03-07T10:00:00+00:00", "2026-03-12",
     "GB 3 business days"),
    ("gb-first-wednesday", "GB", {"first_payout_done": False}, "card", "FR",
     "2026-03-11T10:00:00+00:00", "2026-03-18", "GB first payout 7 calendar days"),
    # Wed 03-11 day 0; Thu 1, Fri 2, Mon 16 = 3.
    ("gb-later-wednesday", "GB", {}, "card", "GB", "2026-03-11T10:00:00+00:00", "2026-03-16",
     "GB 3 business days"),
    # Thu 12-24 day 0; Fri 25 and Mon 28 (Boxing Day observed) are holidays; Tue 1, Wed 2, Thu 3.
    ("gb-later-christmas", "GB", {}, "card", "GB", "2026-12-24T10:00:00+00:00", "2026-12-31",
     "GB 3 business days"),
    # Thu 04-02 day 0; Good Friday and Easter Monday skipped; Tue 1, Wed 2, Thu 04-09 = 3.
    ("de-later-easter", "DE", {}, "card", "DE", "2026-04-02T10:00:00+00:00", "2026-04-09",
     "DE 3 business days"),
    ("hk-calendar", "HK", {}, "card", "HK", "2026-03-13T02:00:00+00:00", "2026-03-20",
     "HK 7 calendar days"),
    # HK has one timing for all payouts: the first payout is not different.
    ("hk-first-same", "HK", {"first_payout_done": False}, "card", "HK",
     "2026-03-13T02:00:00+00:00", "2026-03-20", "HK 7 calendar days"),
    ("my-sunday-calendar", "MY", {}, "card", "MY", "2026-03-08T02:00:00+00:00", "2026-03-15",
     "MY 7 calendar days"),
    # Fri 03-13 day 0; Mon 16 = 1, Tue 17 = 2.
    ("au-friday", "AU", {}, "card", "AU", "2026-03-13T02:00:00+00:00", "2026-03-17",
     "AU 2 business days"),
    # Thu 03-12 day 0; Fri 1, Mon 2, Tue 3, Wed 03-18 = 4.
    ("nz-4", "NZ", {}, "card", "NZ", "2026-03-12T02:00:00+00:00", "2026-03-18",
     "NZ 4 business days"),
    # Mon 03-09 day 0; 10, 11, 12, 13, 16, 17, 18 = 7.
    ("th-7-business", "TH", {}, "card", "TH", "2026-03-09T02:00:00+00:00", "2026-03-18",
     "TH 7 business days"),
    # Mon 03-09 day 0; 10, 11, 12, 13, 16 = 5.
    ("ae-5-business", "AE", {}, "card", "AE", "2026-03-09T06:00:00+00:00", "2026-03-16",
     "AE 5 business days"),
    ("in-domestic", "IN", {}, "card", "IN", "2026-03-09T06:00:00+00:00", "2026-03-11",
     "IN domestic 2 business days"),
    # Mon 03-09 day 0; 10, 11, 12, 13, 16 = 5.
    ("in-international", "IN", {}, "card", "US", "2026-03-09T06:00:00+00:00", "2026-03-16",
     "IN international 5 business days"),
    # Tue 03-03 day 0; Wed 04 Holi; Thu 1, Fri 2.
    ("in-domestic-holi", "IN", {}, "card", "IN", "2026-03-03T06:00:00+00:00", "2026-03-06",
     "IN domestic 2 business days"),
    # Mon 03-09 + 30 days: 22 days left in March, 8 more into April.
    ("br-domestic-30", "BR", {}, "card", "BR", "2026-03-09T15:00:00+00:00", "2026-04-08",
     "BR domestic 30 calendar days"),
    ("br-first-same", "BR", {"first_payout_done": False}, "card", "BR",
     "2026-03-09T15:00:00+00:00", "2026-04-08", "BR domestic 30 calendar days"),
    ("br-international-5", "BR", {}, "card", "US", "2026-03-09T15:00:00+00:00", "2026-03-14",
     "BR international 5 calendar days"),
    # Fri 03-13 day 0; Mon 1, Tue 2.
    ("br-boleto", "BR", {}, "boleto", "BR", "2026-03-13T15:00:00+00:00", "2026-03-17",
     "BR boleto 2 business days"),
    # Boleto/Pix keep their timing whatever the customer's country.
    ("br-pix-foreign-customer", "BR", {}, "pix", "AR", "2026-03-09T15:00:00+00:00",
     "2026-03-11", "BR pix 2 business days"),
    # Mon 03-09 day 0; 10, 11, 12, 13 = 4.
    ("ach", "US", {}, "ach_debit", "US", "2026-03-09T15:00:00+00:00", "2026-03-13",
     "ach_debit 4 business days"),
    # Wed 12-23 day 0; Thu 24 = 1, Fri 25 Christmas, Mon 28 = 2, Tue 29 = 3, Wed 30 = 4.
    ("ach-christmas", "US", {}, "ach_debit", "US", "2026-12-23T15:00:00+00:00", "2026-12-30",
     "ach_debit 4 business days"),
    # Thu 04-02 day 0; Easter skipped; Tue 7, Wed 8, Thu 9, Fri 10, Mon 13, Tue 04-14 = 6.
    ("sepa-easter", "DE", {}, "sepa_debit", "DE", "2026-04-02T10:00:00+00:00", "2026-04-14",
     "sepa_debit 6 business days"),
    # The method table applies regardless of the country row (FR first payout is 7 calendar).
    ("sepa-first-payout", "FR", {"first_payout_done": False}, "sepa_debit", "FR",
     "2026-03-09T10:00:00+00:00", "2026-03-17", "sepa_debit 6 business days"),
    ("bacs-first-payout", "GB", {"first_payout_done": False}, "bacs_debit", "GB",
     "2026-03-09T10:00:00+00:00", "2026-03-13", "bacs_debit 4 business days"),
    ("au-becs", "AU", {}, "au_becs_debit", "AU", "2026-03-09T02:00:00+00:00", "2026-03-11",
     "au_becs_debit 2 business days"),
    ("nz-becs", "NZ", {}, "nz_becs_debit", "NZ", "2026-03-13T02:00:00+00:00", "2026-03-17",
     "nz_becs_debit 2 business days"),
    # Mon 03-09 day 0; 10, 11, 12, 13, 16 = 5.
    ("ca-pad", "CA", {}, "ca_pad", "CA", "2026-03-09T15:00:00+00:00", "2026-03-16",
     "ca_pad 5 business days"),
    # A bank transfer is available the day it is received, even a Saturday.
    ("bank-transfer-saturday", "US", {}, "bank_transfer", "US", "2026-03-07T15:00:00+00:00",
     "2026-03-07", "bank_transfer 0 calendar days"),
    # 23:30 UTC on 12-23 is 08:30 on 12-24 in Tokyo.
    ("bank-transfer-tokyo", "JP", {}, "bank_transfer", "JP", "2026-12-23T23:30:00+00:00",
     "2026-12-24", "bank_transfer 0 calendar days"),
    # 02:00 UTC on 12-24 is 18:00 on Wed 12-23 in Los Angeles: Thu 24 = 1, Fri 25 Christmas,
    # Mon 28 = 2. The same instant for a UTC merchant is Thursday: Tuesday 12-29.
    ("us-los-angeles", "US", {"timezone": "America/Los_Angeles"}, "card", "US",
     "2026-12-24T02:00:00+00:00", "2026-12-28", "US 2 business days"),
    ("us-utc-same-instant", "US", {}, "card", "US", "2026-12-24T02:00:00+00:00", "2026-12-29",
     "US 2 business days"),
    # An offset in the input is converted: 23:30-08:00 is Tue 03-10 07:30 UTC: Wed 1, Thu 2.
    ("offset-input", "US", {}, "card", "US", "2026-03-09T23:30:00-08:00", "2026-03-12",
     "US 2 business days"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("country", "overrides", "method", "customer", "succeeded", "expected", "rule"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_available_on(
    table: TimingTable,
    country: str,
    overrides: dict[str, Any],
    method: str,
    customer: str,
    succeeded: str,
    expected: str,
    rule: str,
) -> None:
    got = available_on(
        table,
        merchant(country, **overrides),
        method=method,
        customer_country=customer,
        succeeded_at=at(succeeded),
    )
    assert got.available_on == date.fromisoformat(expected)
    assert got.rule == rule


JAPAN_CASES = [
    # id, payout weekday, timezone, succeeded_at, expected
    # Exactly 4 business days before the payout counts: Mon 03-09 day 0; Tue 1 .. Fri 03-13 = 4.
    ("exactly-four", 4, "Asia/Tokyo", "2026-03-09T03:00:00+00:00", "2026-03-13"),
    # Saturday 03-07: day 0 is Monday 03-09, so the same Friday 03-13.
    ("saturday", 4, "Asia/Tokyo", "2026-03-07T03:00:00+00:00", "2026-03-13"),
    # Saturday with a Thursday payout: counted from Monday 03-09 the 4th business day is Fri
    # 03-13, so Thursday 03-12 is too early: Thursday 03-19 (counting from Saturday gives 03-12).
    ("saturday-thursday-payout", 3, "Asia/Tokyo", "2026-03-07T03:00:00+00:00", "2026-03-19"),
    # Golden Week: Mon 04-27 day 0; Tue 28 = 1, Wed 29 Showa Day, Thu 30 = 2, Fri 05-01 = 3,
    # Mon 4 / Tue 5 / Wed 6 holidays, Thu 05-07 = 4; the next Friday is 05-08 (not 05-01).
    ("golden-week", 4, "Asia/Tokyo", "2026-04-27T03:00:00+00:00", "2026-05-08"),
    # Wed 11-18 day 0; Thu 1, Fri 2, Mon 23 Labour Thanksgiving Day, Tue 24 = 3, Wed 25 = 4;
    # Tuesday 11-24 is too early, so Tuesday 12-01.
    ("labour-thanksgiving", 1, "Asia/Tokyo", "2026-11-18T03:00:00+00:00", "2026-12-01"),
    # 23:30 UTC 12-23 is Thu 12-24 in Tokyo: Fri 1, Mon 2, Tue 3, Wed 12-30 = 4;
    # next Tuesday 2027-01-05. Taken as UTC (Wed 12-23) the 4th day is Tue 12-29 itself.
    ("tokyo-local-date", 1, "Asia/Tokyo", "2026-12-23T23:30:00+00:00", "2027-01-05"),
    ("utc-local-date", 1, "UTC", "2026-12-23T23:30:00+00:00", "2026-12-29"),
    # Tue 03-10 day 0; Wed 1, Thu 2, Fri 3, Mon 03-16 = 4; next Friday is 03-20, the Vernal
    # Equinox holiday: the seed says nothing about moving the payout day, so it is not moved.
    ("payout-day-is-holiday", 4, "Asia/Tokyo", "2026-03-10T03:00:00+00:00", "2026-03-20"),
]


@pytest.mark.parametrize(
    ("weekday", "timezone", "succeeded", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in JAPAN_CASES],
)
def test_japan_weekly_payout(
    table: TimingTable, weekday: int, timezone: str, succeeded: str, expected: str
) -> None:
    account = merchant("JP", payout_weekday=weekday, timezone=timezone)
    got = available_on(
        table, account, method="card", customer_country="JP", succeeded_at=at(succeeded)
    )
    assert got.available_on == date.fromisoformat(expected)
    day = st.WEEKDAYS[weekday].title()
    assert got.rule == f"JP weekly on {day}, 4 business days cutoff"


def test_naive_time_is_refused(table: TimingTable) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        available_on(
            table,
            merchant("US"),
            method="card",
            customer_country="US",
            succeeded_at=datetime(2026, 3, 9, 12, 0),
        )


@pytest.mark.parametrize(
    ("country", "method", "customer", "error", "message"),
    [
        ("US", "crypto", "US", SettlementConfigError, "method: unknown payment method 'crypto'"),
        ("US", "boleto", "US", SettlementConfigError, "'boleto' has no settlement timing .* US"),
        ("KR", "card", "KR", SettlementConfigError, "country KR: no settlement timing row"),
        ("US", "card", "USA", ValueError, "customer_country"),
    ],
)
def test_calculator_refusals(
    table: TimingTable,
    country: str,
    method: str,
    customer: str,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        available_on(
            table,
            merchant(country),
            method=method,
            customer_country=customer,
            succeeded_at=at("2026-03-09T12:00:00+00:00"),
        )


def test_holiday_calendar_is_built_once_per_country_and_year(
    table: TimingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = holidays.country_holidays
    calls: list[str] = []

    def counting(country: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(country)
        return real(country, *args, **kwargs)

    monkeypatch.setattr(holidays, "country_holidays", counting)
    st._holiday_dates.cache_clear()
    account = merchant("US")
    for day in range(1, 29):
        available_on(
            table,
            account,
            method="card",
            customer_country="US",
            succeeded_at=datetime.fromisoformat(f"2026-02-{day:02d}T12:00:00+00:00"),
        )
    assert calls == ["US"]


# --------------------------------------------------------------------------- operator files


def test_operator_file_replaces_a_row_and_adds_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[countries.GB]  # whole row replaced: no separate first payout any more
name = "United Kingdom"
default = { days = 2, unit = "business" }

[countries.KR]
name = "South Korea"
default = { days = 1, unit = "business" }

[methods.ach_debit]  # the seed's faster 2-day ACH for eligible US merchants
name = "ACH Direct Debit"
days = 2
unit = "business"

[methods.giro]
name = "Giro"
days = 3
unit = "calendar"
""",
    )
    table = load_timing(path)
    assert table.sources == (st.PACKAGED, str(path))
    assert table.countries["GB"].source == str(path)
    assert table.countries["US"].source == st.PACKAGED
    assert len(table.countries) == 46

    def when(country: str, method: str, **overrides: Any) -> tuple[date, str]:
        got = available_on(
            table,
            merchant(country, **overrides),
            method=method,
            customer_country=country,
            succeeded_at=at("2026-03-11T10:00:00+00:00"),  # a Wednesday
        )
        return got.available_on, got.rule

    # Wed 03-11 day 0; Thu 1, Fri 2 (the first payout no longer waits 7 calendar days).
    assert when("GB", "card", first_payout_done=False) == (date(2026, 3, 13), "GB 2 business days")
    assert when("KR", "card") == (date(2026, 3, 12), "KR 1 business day")
    assert when("US", "ach_debit") == (date(2026, 3, 13), "ach_debit 2 business days")
    assert when("DE", "giro") == (date(2026, 3, 14), "giro 3 calendar days")
    assert when("US", "card") == (date(2026, 3, 13), "US 2 business days")  # untouched


GI_ROW = """
[countries.GI]
name = "Gibraltar"
first = { days = 7, unit = "calendar" }
default = { days = 3, unit = "business" }
"""


def _gi_christmas(table: TimingTable) -> tuple[date, str]:
    got = available_on(
        table,
        merchant("GI"),
        method="card",
        customer_country="GI",
        succeeded_at=at("2026-12-24T10:00:00+00:00"),
    )
    return got.available_on, got.rule


def test_holiday_calendar_none_means_weekends_only(table: TimingTable, tmp_path: Path) -> None:
    # Packaged: Thu 12-24 day 0; Fri 25 and Mon 28 are GI holidays; Tue 1, Wed 2, Thu 31 = 3.
    assert _gi_christmas(table) == (date(2026, 12, 31), "GI 3 business days")
    # Weekends only: Fri 25 = 1, Mon 28 = 2, Tue 29 = 3.
    weekends = load_timing(write(tmp_path, GI_ROW + 'holiday_calendar = "none"\n'))
    assert weekends.countries["GI"].holiday_calendar is None
    assert _gi_christmas(weekends) == (date(2026, 12, 29), "GI 3 business days (weekends only)")


def test_holidays_without_the_country_must_be_made_explicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older `holidays` without Gibraltar: loading fails until the data says what to use."""
    real = holidays.country_holidays

    def without_gibraltar(country: str, *args: Any, **kwargs: Any) -> Any:
        if country == "GI":
            raise NotImplementedError("Country GI not available")
        return real(country, *args, **kwargs)

    monkeypatch.setattr(holidays, "country_holidays", without_gibraltar)
    with pytest.raises(SettlementConfigError) as caught:
        load_timing()
    assert str(caught.value).startswith(f"{st.PACKAGED}: countries.GI.holiday_calendar: ")
    fixed = load_timing(write(tmp_path, GI_ROW + 'holiday_calendar = "GB"\n'))
    assert fixed.countries["GI"].holiday_calendar == "GB"
    # GB has the same Christmas holidays in 2026.
    assert _gi_christmas(fixed) == (date(2026, 12, 31), "GI 3 business days (GB holidays)")


def test_holiday_calendar_can_name_a_subdivision(table: TimingTable, tmp_path: Path) -> None:
    """Country-level GB lacks England's Easter Monday; an operator can choose GB-ENG."""
    path = write(
        tmp_path,
        """
[countries.GB]
name = "United Kingdom"
first = { days = 7, unit = "calendar" }
default = { days = 3, unit = "business" }
holiday_calendar = "GB-ENG"
""",
    )

    def easter(t: TimingTable) -> date:
        return available_on(
            t,
            merchant("GB"),
            method="card",
            customer_country="GB",
            succeeded_at=at("2026-04-02T10:00:00+00:00"),
        ).available_on

    # Thu 04-02 day 0, Good Friday skipped: Mon 6 = 1, Tue 2, Wed 04-08 = 3.
    assert easter(table) == date(2026, 4, 8)
    # England also skips Easter Monday: Tue 1, Wed 2, Thu 04-09 = 3.
    assert easter(load_timing(path)) == date(2026, 4, 9)


def test_weekly_row_needs_the_merchant_weekday(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[countries.KR]\nname = "South Korea"\nweekly = { cutoff_business_days = 2 }\n'
    )
    table = load_timing(path)
    with pytest.raises(SettlementConfigError, match=r"payout_weekday: required .* KR"):
        available_on(
            table,
            merchant("KR"),
            method="card",
            customer_country="KR",
            succeeded_at=at("2026-03-09T03:00:00+00:00"),
        )
    # Mon 03-09 day 0; Tue 1, Wed 2; the next Thursday is 03-12.
    got = available_on(
        table,
        merchant("KR", payout_weekday=3),
        method="card",
        customer_country="KR",
        succeeded_at=at("2026-03-09T03:00:00+00:00"),
    )
    assert got.available_on == date(2026, 3, 12)


GB = '[countries.GB]\nname = "United Kingdom"\n'


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param(GB + 'default = { days = 3, unit = "weekdays" }', "countries.GB.default.unit",
                     id="bad-unit"),
        pytest.param(GB + 'default = { days = -1, unit = "business" }',
                     "countries.GB.default.days", id="negative-days"),
        pytest.param(GB + 'default = { days = 3.0, unit = "business" }',
                     "countries.GB.default.days", id="float-days"),
        pytest.param(GB + 'default = { days = true, unit = "business" }',
                     "countries.GB.default.days", id="bool-days"),
        pytest.param(GB + 'default = { days = 400, unit = "business" }',
                     "countries.GB.default.days", id="too-many-days"),
        pytest.param(GB + 'default = { unit = "business" }', "countries.GB.default.days",
                     id="missing-days"),
        pytest.param(GB + 'default = { days = 3, unit = "business", hours = 2 }',
                     "countries.GB.default.hours", id="unknown-timing-key"),
        pytest.param(GB + 'default = { days = 3, unit = "business" }\n'
                     'frist = { days = 7, unit = "calendar" }', "countries.GB.frist",
                     id="unknown-row-key"),
        pytest.param(GB, "countries.GB.default", id="missing-default"),
        pytest.param('[countries.GB]\ndefault = { days = 3, unit = "business" }',
                     "countries.GB.name", id="missing-name"),
        pytest.param('[countries.XX]\nname = "Nowhere"\ndefault = { days = 3, unit = "business" }',
                     "countries.XX", id="unknown-country"),
        pytest.param('[countries.gb]\nname = "lower"\ndefault = { days = 3, unit = "business" }',
                     "countries.gb", id="lowercase-country"),
        pytest.param('[countries.EU]\nname = "Europe"\ndefault = { days = 3, unit = "business" }',
                     "countries.EU", id="grouping-not-country"),
        pytest.param(GB + 'default = { days = 3, unit = "business" }\n'
                     'international = { days = 5, unit = "business" }\n'
                     'first = { days = 7, unit = "calendar" }', "countries.GB.international",
                     id="first-and-international"),
        pytest.param(GB + 'weekly = { cutoff_business_days = 4 }\n'
                     'default = { days = 3, unit = "business" }', "countries.GB.default",
                     id="weekly-with-default"),
        pytest.param(GB + "weekly = { cutoff = 4 }", "countries.GB.weekly.cutoff",
                     id="weekly-unknown-key"),
        pytest.param(GB + "weekly = { cutoff_business_days = -4 }",
                     "countries.GB.weekly.cutoff_business_days", id="weekly-negative"),
        pytest.param(GB + 'default = { days = 3, unit = "business" }\n'
                     'holiday_calendar = "Mars"', "countries.GB.holiday_calendar",
                     id="bad-holiday-calendar"),
        pytest.param(GB + 'default = { days = 3, unit = "business" }\n'
                     'holiday_calendar = "GB-XYZ"', "countries.GB.holiday_calendar",
                     id="unknown-subdivision"),
        pytest.param(GB + 'default = { days = 3, unit = "business" }\n'
                     'methods = { card = { days = 1, unit = "business" } }',
                     "countries.GB.methods.card", id="card-variant"),
        pytest.param('[methods.ach_debit]\nname = "ACH"\ndays = 4\nunit = "fortnight"',
                     "methods.ach_debit.unit", id="method-bad-unit"),
        pytest.param('[methods.ach_debit]\nname = "ACH"\ndays = 4', "methods.ach_debit.unit",
                     id="method-missing-unit"),
        pytest.param('[methods.card]\nname = "Card"\ndays = 1\nunit = "business"',
                     "methods.card", id="card-in-method-table"),
        pytest.param('[methods.ACH]\nname = "ACH"\ndays = 1\nunit = "business"', "methods.ACH",
                     id="method-name-case"),
        pytest.param('[banks.US]\nname = "x"', "banks", id="unknown-top-level"),
    ],
)  # fmt: skip
def test_operator_file_validation(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettlementConfigError) as caught:
        load_timing(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {where}: "), message
    assert "\n" not in message


def test_country_variant_shadowed_by_the_method_table_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[methods.boleto]\nname = "Boleto"\ndays = 1\nunit = "business"\n')
    with pytest.raises(SettlementConfigError) as caught:
        load_timing(path)
    message = str(caught.value)
    assert message.startswith(f"{st.PACKAGED}: countries.BR.methods.boleto: is shadowed")
    assert str(path) in message


def test_unreadable_and_malformed_operator_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(SettlementConfigError, match=f"^{re.escape(str(missing))}: cannot read"):
        load_timing(missing)
    broken = write(tmp_path, "[countries.GB\nname = 1\n")
    with pytest.raises(SettlementConfigError, match=f"^{re.escape(str(broken))}: not valid TOML"):
        load_timing(broken)


# --------------------------------------------------------------------------- merchant accounts


def test_parse_merchant_accounts() -> None:
    parsed = parse_merchant_accounts(
        """[
          {"psp": "braintree", "currency": "EUR", "country": "GB", "timezone": "Europe/London",
           "first_payout_done": true, "minimum_balance": "100.00"},
          {"psp": "braintree", "currency": "jpy", "country": "jp", "payout_weekday": "Friday",
           "timezone": "Asia/Tokyo", "first_payout_done": false},
          {"psp": "paypal", "currency": "USD", "country": "US", "payout_weekday": 0}
        ]"""
    )
    assert parsed == (
        MerchantAccount(
            psp="braintree",
            currency="EUR",
            country="GB",
            timezone="Europe/London",
            first_payout_done=True,
            minimum_balance=Decimal("100.00"),
        ),
        MerchantAccount(
            psp="braintree",
            currency="JPY",
            country="JP",
            timezone="Asia/Tokyo",
            payout_weekday=4,
            first_payout_done=False,
        ),
        MerchantAccount(psp="paypal", currency="USD", country="US", payout_weekday=0),
    )
    assert parsed[2].timezone == "UTC"
    assert parse_merchant_accounts("[]") == ()


OK = '"psp": "braintree", "currency": "EUR", "country": "GB"'


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        pytest.param(f'[{{{OK}, "minimum_balance": 100.0}}]',
                     "merchant_accounts[0].minimum_balance", id="float-balance"),
        pytest.param(f'[{{{OK}, "minimum_balance": 100}}]',
                     "merchant_accounts[0].minimum_balance", id="int-balance"),
        pytest.param(f'[{{{OK}, "minimum_balance": "1e3"}}]',
                     "merchant_accounts[0].minimum_balance", id="exponent-balance"),
        pytest.param(f'[{{{OK}, "minimum_balance": "-5.00"}}]',
                     "merchant_accounts[0].minimum_balance", id="negative-balance"),
        pytest.param(f'[{{{OK}, "timezone": "Europe/Londn"}}]', "merchant_accounts[0].timezone",
                     id="bad-timezone"),
        pytest.param(f'[{{{OK}, "timezone": "../etc/passwd"}}]', "merchant_accounts[0].timezone",
                     id="path-timezone"),
        pytest.param('[{"psp": "braintree", "currency": "JPY", "country": "JP"}]',
                     "merchant_accounts[0].payout_weekday", id="jp-without-weekday"),
        pytest.param(f'[{{{OK}, "payout_weekday": 7}}]', "merchant_accounts[0].payout_weekday",
                     id="weekday-7"),
        pytest.param(f'[{{{OK}, "payout_weekday": "funday"}}]',
                     "merchant_accounts[0].payout_weekday", id="weekday-name"),
        pytest.param(f'[{{{OK}, "payout_weekday": true}}]', "merchant_accounts[0].payout_weekday",
                     id="weekday-bool"),
        pytest.param(f'[{{{OK}}}, {{{OK}}}]', "merchant_accounts[1].currency",
                     id="duplicate"),
        pytest.param(f'[{{{OK}}}, {{"psp": "braintree", "currency": "eur", "country": "FR"}}]',
                     "merchant_accounts[1].currency", id="duplicate-after-normalising"),
        pytest.param(f'[{{{OK}, "tz": "UTC"}}]', "merchant_accounts[0].tz", id="unknown-key"),
        pytest.param('[{"currency": "EUR", "country": "GB"}]', "merchant_accounts[0].psp",
                     id="missing-psp"),
        pytest.param('[{"psp": "Brain Tree", "currency": "EUR", "country": "GB"}]',
                     "merchant_accounts[0].psp", id="bad-psp"),
        pytest.param('[{"psp": "braintree", "currency": "EURO", "country": "GB"}]',
                     "merchant_accounts[0].currency", id="bad-currency"),
        pytest.param('[{"psp": "braintree", "currency": "EUR", "country": "UK"}]',
                     "merchant_accounts[0].country", id="bad-country"),
        pytest.param(f'[{{{OK}, "first_payout_done": "yes"}}]',
                     "merchant_accounts[0].first_payout_done", id="first-payout-string"),
        pytest.param(f'[{{{OK}}}, 1]', "merchant_accounts[1]: must be a JSON object",
                     id="not-an-object"),
        pytest.param(f'{{{OK}}}', "merchant_accounts: must be a JSON list", id="not-a-list"),
        pytest.param("[{", "merchant_accounts: not valid JSON", id="bad-json"),
    ],
)  # fmt: skip
def test_merchant_account_errors(value: str, prefix: str) -> None:
    with pytest.raises(SettlementConfigError) as caught:
        parse_merchant_accounts(value)
    assert str(caught.value).startswith(prefix), str(caught.value)


def test_merchant_account_is_validated_when_built_directly() -> None:
    with pytest.raises(SettlementConfigError, match="payout_weekday"):
        MerchantAccount(psp="braintree", currency="JPY", country="JP")
    with pytest.raises(SettlementConfigError, match="minimum_balance"):
        MerchantAccount(psp="braintree", currency="EUR", country="GB", minimum_balance=0.5)  # type: ignore[arg-type]
    with pytest.raises(SettlementConfigError, match="timezone"):
        MerchantAccount(psp="braintree", currency="EUR", country="GB", timezone="Mars/Base")
