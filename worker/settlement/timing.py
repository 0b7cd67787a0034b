"""Settlement timing: the date a successful payment's funds become available.

The rules are data (worker/data/settlement_timing.toml, transcribed from Stripe's
"balances and settlement timing" page) so a reviewer can check them row by row and an
operator file can change or add rows without a release. Everything here is pure: no
database, no broker; the only outside input is the `holidays` package's calendars.

Longer than 400 lines on purpose: the table's loader, its validation and the date rules
(calendar and business days, public holidays, Japan's weekly payout) are one piece that a
reviewer checks against seed 004 at once.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from babel import Locale

from worker.kernel.errors import ValidationError
from worker.kernel.money import is_currency, parse_amount

Unit = Literal["calendar", "business"]
UNITS: tuple[Unit, ...] = ("calendar", "business")
# These methods settle on the merchant country's own row (first/default/international).
COUNTRY_ROW_METHODS = frozenset({"card", "paypal"})
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PACKAGED = "worker/data/settlement_timing.toml"
MAX_DAYS = 366  # a bigger count is a typo, and would make the business-day walk long
NO_HOLIDAYS = "none"

_ONE_DAY = timedelta(days=1)
_METHOD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_PSP_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CALENDAR = re.compile(r"([A-Z]{2})(?:-([A-Za-z0-9]{1,10}))?")
# Two-letter CLDR territories that are groupings, pseudo-regions or only reserved codes.
_NOT_COUNTRIES = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "ZZ"}
)
_COUNTRY_KEYS = frozenset(
    {"name", "default", "first", "international", "methods", "weekly", "holiday_calendar"}
)
_TIMING_KEYS = frozenset({"days", "unit"})
_METHOD_KEYS = frozenset({"name", "days", "unit"})
_WEEKLY_KEYS = frozenset({"cutoff_business_days"})
_MERCHANT_KEYS = (
    "psp",
    "currency",
    "country",
    "timezone",
    "payout_weekday",
    "first_payout_done",
    "minimum_balance",
)
_MERCHANT_REQUIRED = ("psp", "currency", "country")


class SettlementConfigError(ValueError):
    """Settlement data or a merchant account that cannot be used; one line naming where."""


@dataclass(frozen=True)
class Timing:
    days: int
    unit: Unit

    def __str__(self) -> str:
        return f"{self.days} {self.unit} day{'' if self.days == 1 else 's'}"


@dataclass(frozen=True)
class WeeklyRule:
    """Japan: one payout a week, holding payments made this many business days before."""

    cutoff_business_days: int


@dataclass(frozen=True)
class CountryRow:
    code: str
    name: str
    default: Timing | None
    first: Timing | None = None
    international: Timing | None = None
    methods: Mapping[str, Timing] = field(default_factory=lambda: MappingProxyType({}))
    weekly: WeeklyRule | None = None
    # `holidays` calendar ("GB", "GB-ENG"); None means weekends only.
    holiday_calendar: str | None = None
    source: str = PACKAGED


@dataclass(frozen=True)
class MethodRow:
    method: str
    name: str
    timing: Timing
    source: str = PACKAGED


@dataclass(frozen=True)
class TimingTable:
    countries: Mapping[str, CountryRow]
    methods: Mapping[str, MethodRow]
    sources: tuple[str, ...]

    def known_methods(self) -> frozenset[str]:
        variants = {m for row in self.countries.values() for m in row.methods}
        return COUNTRY_ROW_METHODS | frozenset(self.methods) | variants


@dataclass(frozen=True)
class Schedule:
    available_on: date
    rule: str  # which row produced the date, kept for operators ("US 2 business days")


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    return frozenset(
        c
        for c in Locale("en").territories
        if isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c) and c not in _NOT_COUNTRIES
    )


def is_country(code: object) -> bool:
    return isinstance(code, str) and code in _countries()


# --------------------------------------------------------------------------- loading


@lru_cache(maxsize=4)
def cached_timing(extra: str | None = None) -> TimingTable:
    """`load_timing` once per process and file: start-up validates it, charges then reuse it."""
    return load_timing(extra)


def load_timing(extra: str | Path | None = None) -> TimingTable:
    """The packaged table, then the operator file's rows replacing or adding whole rows.

    Load once at start-up: every problem is raised here, not on the first charge.
    """
    text = resources.files("worker.data").joinpath("settlement_timing.toml").read_text("utf-8")
    countries, methods = _parse_document(text, PACKAGED)
    sources = [PACKAGED]
    if extra is not None:
        source = str(extra)
        try:
            text = Path(extra).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettlementConfigError(f"{source}: cannot read: {exc}") from None
        more_countries, more_methods = _parse_document(text, source)
        countries.update(more_countries)
        methods.update(more_methods)
        sources.append(source)
    for row in countries.values():
        # Checked after the merge, so an operator row can replace a packaged row whose
        # calendar an older `holidays` lacks.
        _check_holiday_calendar(row)
        for method in row.methods:
            if method in methods:
                _fail(
                    row.source,
                    f"countries.{row.code}.methods.{method}",
                    f"is shadowed by methods.{method} in {methods[method].source} "
                    "(the method table applies in every country)",
                )
    return TimingTable(
        countries=MappingProxyType(countries),
        methods=MappingProxyType(methods),
        sources=tuple(sources),
    )


def _fail(source: str, where: str, message: str) -> NoReturn:
    raise SettlementConfigError(f"{source}: {where}: {message}")


def _table(value: object, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(source, where, "must be a table")
    return value


def _check_keys(raw: Mapping[str, Any], allowed: frozenset[str], source: str, where: str) -> None:
    for key in raw:
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            _fail(source, f"{where}.{key}", f"unknown key (expected one of: {expected})")


def _parse_document(text: str, source: str) -> tuple[dict[str, CountryRow], dict[str, MethodRow]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettlementConfigError(f"{source}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("countries", "methods"):
            _fail(source, key, "unknown top-level table (expected countries, methods)")
    countries: dict[str, CountryRow] = {}
    for code, raw in _table(doc.get("countries", {}), source, "countries").items():
        countries[code] = _country_row(code, raw, source)
    methods: dict[str, MethodRow] = {}
    for method, raw in _table(doc.get("methods", {}), source, "methods").items():
        methods[method] = _method_row(method, raw, source)
    return countries, methods


def _name(raw: Mapping[str, Any], source: str, where: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        _fail(source, f"{where}.name", "is required (a non-empty string)")
    return name.strip()


def _day_count(value: object, source: str, where: str) -> int:
    if value is None:
        _fail(source, where, "is required")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        _fail(source, where, f"must be an integer from 0 to {MAX_DAYS}, got {value!r}")
    return value


def _timing(raw: object, source: str, where: str, allowed: frozenset[str] = _TIMING_KEYS) -> Timing:
    if not isinstance(raw, dict):
        _fail(source, where, 'must be a table like { days = 3, unit = "business" }')
    _check_keys(raw, allowed, source, where)
    days = _day_count(raw.get("days"), source, f"{where}.days")
    unit = raw.get("unit")
    if unit == "calendar" or unit == "business":
        return Timing(days, unit)
    _fail(source, f"{where}.unit", f'must be "calendar" or "business", got {unit!r}')


def _country_row(code: str, raw: object, source: str) -> CountryRow:
    where = f"countries.{code}"
    if not is_country(code):
        _fail(source, where, f"{code[:10]!r} is not an uppercase ISO 3166 alpha-2 country code")
    row = _table(raw, source, where)
    _check_keys(row, _COUNTRY_KEYS, source, where)
    name = _name(row, source, where)
    timings = {
        key: _timing(row[key], source, f"{where}.{key}")
        for key in ("default", "first", "international")
        if key in row
    }
    variants: dict[str, Timing] = {}
    for method, value in _table(row.get("methods", {}), source, f"{where}.methods").items():
        here = f"{where}.methods.{method}"
        if not _METHOD_NAME.fullmatch(method):
            _fail(source, here, "a method name is lowercase letters, digits and _")
        if method in COUNTRY_ROW_METHODS:
            _fail(source, here, f"{method} always settles on the country's own timings")
        variants[method] = _timing(value, source, here)
    weekly: WeeklyRule | None = None
    if "weekly" in row:
        rule = _table(row["weekly"], source, f"{where}.weekly")
        _check_keys(rule, _WEEKLY_KEYS, source, f"{where}.weekly")
        cutoff = _day_count(
            rule.get("cutoff_business_days"), source, f"{where}.weekly.cutoff_business_days"
        )
        weekly = WeeklyRule(cutoff)
        for key in ("default", "first", "international", "methods"):
            if key in row:
                _fail(source, f"{where}.{key}", "cannot be combined with weekly")
    elif "default" not in timings:
        _fail(source, f"{where}.default", "is required (unless the row is weekly)")
    if "first" in timings and "international" in timings:
        # The seed has no such row, so which wins for a first international payment is unknown.
        _fail(source, f"{where}.international", "cannot be combined with first")
    return CountryRow(
        code=code,
        name=name,
        default=timings.get("default"),
        first=timings.get("first"),
        international=timings.get("international"),
        methods=MappingProxyType(variants),
        weekly=weekly,
        holiday_calendar=_holiday_calendar(row.get("holiday_calendar", code), source, where),
        source=source,
    )


def _holiday_calendar(value: object, source: str, where: str) -> str | None:
    where = f"{where}.holiday_calendar"
    if value == NO_HOLIDAYS:
        return None
    match = _CALENDAR.fullmatch(value) if isinstance(value, str) else None
    if match is None or not is_country(match.group(1)):
        _fail(source, where, f'must be a country code, "CC-SUBDIVISION" or "none", got {value!r}')
    return match.group(0)


def _check_holiday_calendar(row: CountryRow) -> None:
    """Refuse a calendar the installed `holidays` lacks: quietly counting weekends only
    would make payments available early on every holiday."""
    if row.holiday_calendar is None:
        return
    country, _, subdivision = row.holiday_calendar.partition("-")
    try:
        holidays.country_holidays(country, subdiv=subdivision or None)
    except NotImplementedError as exc:
        _fail(
            row.source,
            f"countries.{row.code}.holiday_calendar",
            f"the installed holidays package has no calendar {row.holiday_calendar!r} ({exc}); "
            'set holiday_calendar to a supported code or "none" (weekends only)',
        )


def _method_row(method: str, raw: object, source: str) -> MethodRow:
    where = f"methods.{method}"
    if not _METHOD_NAME.fullmatch(method):
        _fail(source, where, "a method name is lowercase letters, digits and _")
    if method in COUNTRY_ROW_METHODS:
        _fail(source, where, f"{method} settles on the merchant country's row, not the table")
    row = _table(raw, source, where)
    _check_keys(row, _METHOD_KEYS, source, where)
    timing = _timing(row, source, where, _METHOD_KEYS)
    return MethodRow(method, _name(row, source, where), timing, source)


# --------------------------------------------------------------------------- merchants


class _MerchantError(SettlementConfigError):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"MerchantAccount.{field_name}: {reason}")
        self.field_name = field_name
        self.reason = reason


@dataclass(frozen=True)
class MerchantAccount:
    """A PSP merchant account receiving our customers' payments: its country picks the row,
    its time zone decides a payment's local date."""

    psp: str
    currency: str
    country: str
    timezone: str = "UTC"
    payout_weekday: int | None = None  # 0 = Monday; Japan pays out weekly on this day
    first_payout_done: bool = True
    minimum_balance: Decimal = Decimal("0")

    def __post_init__(self) -> None:
        if not isinstance(self.psp, str) or not _PSP_NAME.fullmatch(self.psp):
            raise _MerchantError("psp", f"{str(self.psp)[:40]!r} is not a PSP name like braintree")
        if not isinstance(self.currency, str) or not is_currency(self.currency):
            raise _MerchantError("currency", f"{str(self.currency)[:10]!r} is not ISO 4217")
        if not is_country(self.country):
            raise _MerchantError(
                "country", f"{str(self.country)[:10]!r} is not an ISO 3166 alpha-2 country code"
            )
        _zone(self.timezone)
        weekday = self.payout_weekday
        if weekday is not None and (
            isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6
        ):
            raise _MerchantError("payout_weekday", f"must be 0-6 (0 = Monday), got {weekday!r}")
        if weekday is None and self.country == "JP":
            raise _MerchantError("payout_weekday", "is required for a JP merchant (weekly payout)")
        if not isinstance(self.first_payout_done, bool):
            raise _MerchantError("first_payout_done", "must be true or false")
        balance = self.minimum_balance
        if not isinstance(balance, Decimal) or not balance.is_finite() or balance < 0:
            raise _MerchantError("minimum_balance", "must be a non-negative Decimal")


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise _MerchantError("timezone", "must be an IANA time zone name like Europe/London")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _MerchantError("timezone", f"unknown IANA time zone {name[:60]!r}") from None


def parse_merchant_accounts(value: str) -> tuple[MerchantAccount, ...]:
    """Parse the JSON list of merchant accounts; amounts are decimal strings, never numbers."""
    try:
        data = json.loads(value, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise SettlementConfigError(f"merchant_accounts: not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise SettlementConfigError("merchant_accounts: must be a JSON list of objects")
    accounts: list[MerchantAccount] = []
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(data):
        where = f"merchant_accounts[{index}]"
        if not isinstance(entry, dict):
            raise SettlementConfigError(f"{where}: must be a JSON object")
        try:
            account = _merchant(entry)
        except _MerchantError as exc:
            raise SettlementConfigError(f"{where}.{exc.field_name}: {exc.reason}") from None
        key = (account.psp, account.currency)
        if key in seen:
            raise SettlementConfigError(
                f"{where}.currency: {account.psp}/{account.currency} duplicates "
                f"merchant_accounts[{seen[key]}] (one account per psp and currency)"
            )
        seen[key] = index
        accounts.append(account)
    return tuple(accounts)


def _merchant(entry: dict[str, Any]) -> MerchantAccount:
    for key in entry:
        if key not in _MERCHANT_KEYS:
            raise _MerchantError(str(key), f"unknown key (expected: {', '.join(_MERCHANT_KEYS)})")
    for key in _MERCHANT_REQUIRED:
        if key not in entry:
            raise _MerchantError(key, "is required")
    texts: dict[str, str] = {}
    for key in ("psp", "currency", "country", "timezone"):
        raw = entry.get(key, "UTC")
        if not isinstance(raw, str):
            raise _MerchantError(key, "must be a string")
        texts[key] = raw.strip().upper() if key in ("currency", "country") else raw.strip()
    done = entry.get("first_payout_done", True)
    if not isinstance(done, bool):
        raise _MerchantError("first_payout_done", "must be true or false")
    return MerchantAccount(
        psp=texts["psp"],
        currency=texts["currency"],
        country=texts["country"],
        timezone=texts["timezone"],
        payout_weekday=_weekday(entry.get("payout_weekday")),
        first_payout_done=done,
        minimum_balance=_minimum_balance(entry.get("minimum_balance", "0")),
    )


def _weekday(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in WEEKDAYS:
        return WEEKDAYS.index(value.strip().lower())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
        return value
    raise _MerchantError(
        "payout_weekday", f'must be 0-6 (0 = Monday) or a day name like "friday", got {value!r}'
    )


def _minimum_balance(value: object) -> Decimal:
    if not isinstance(value, str):
        # A JSON number reaches Python as a float (or an int): never money.
        raise _MerchantError("minimum_balance", 'must be a decimal string like "100.00"')
    try:
        return parse_amount(value, "minimum_balance", allow_zero=True)
    except ValidationError as exc:
        raise _MerchantError("minimum_balance", exc.message) from None


# --------------------------------------------------------------------------- calculator


@lru_cache(maxsize=1024)
def _holiday_dates(calendar: str, year: int) -> frozenset[date]:
    """One `holidays` build per calendar and year: this runs for every successful charge."""
    country, _, subdivision = calendar.partition("-")
    found = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
    return frozenset(found.keys())


def _is_business_day(day: date, calendar: str | None) -> bool:
    if day.weekday() >= 5:
        return False
    return calendar is None or day not in _holiday_dates(calendar, day.year)


def _business_day_on_or_after(day: date, calendar: str | None) -> date:
    while not _is_business_day(day, calendar):
        day += _ONE_DAY
    return day


def _add_business_days(day0: date, count: int, calendar: str | None) -> date:
    day = day0
    for _ in range(count):
        day = _business_day_on_or_after(day + _ONE_DAY, calendar)
    return day


def _settle(timing: Timing, local_day: date, calendar: str | None) -> date:
    if timing.unit == "calendar":
        return local_day + timedelta(days=timing.days)
    # A payment on a weekend or holiday counts from the next business day (day 0).
    return _add_business_days(_business_day_on_or_after(local_day, calendar), timing.days, calendar)


def available_on(
    table: TimingTable,
    merchant: MerchantAccount,
    *,
    method: str,
    customer_country: str,
    succeeded_at: datetime,
) -> Schedule:
    """When a payment that succeeded at `succeeded_at` becomes available, and which rule said so.

    Day 0 is the local date in the merchant account's time zone; business days skip
    weekends and the merchant country's public holidays.
    """
    if succeeded_at.tzinfo is None or succeeded_at.utcoffset() is None:
        raise ValueError("succeeded_at must be timezone-aware: a naive time has no local date")
    customer = customer_country.strip().upper() if isinstance(customer_country, str) else ""
    if not is_country(customer):
        raise ValueError(f"customer_country: {str(customer_country)[:10]!r} is not ISO 3166")
    row = table.countries.get(merchant.country)
    if row is None:
        raise SettlementConfigError(
            f"country {merchant.country}: no settlement timing row "
            "(add one under [countries] in the operator file)"
        )
    local_day = succeeded_at.astimezone(_zone(merchant.timezone)).date()
    calendar = row.holiday_calendar
    if method in table.methods:
        timing = table.methods[method].timing
        label = f"{method} {timing}"
    elif method in row.methods:
        timing = row.methods[method]
        label = f"{row.code} {method} {timing}"
    elif method in COUNTRY_ROW_METHODS:
        if row.weekly is not None:
            return _weekly(row, row.weekly, merchant, local_day)
        timing, label = _country_timing(row, merchant, customer)
    elif method in table.known_methods():
        raise SettlementConfigError(
            f"method: {method!r} has no settlement timing for a merchant in {row.code}"
        )
    else:
        known = ", ".join(sorted(table.known_methods()))
        raise SettlementConfigError(f"method: unknown payment method {method!r} (known: {known})")
    if timing.unit == "business" and calendar != row.code:
        label += f" ({calendar} holidays)" if calendar else " (weekends only)"
    return Schedule(_settle(timing, local_day, calendar), label)


def _country_timing(
    row: CountryRow, merchant: MerchantAccount, customer: str
) -> tuple[Timing, str]:
    if row.international is not None and customer != merchant.country:
        return row.international, f"{row.code} international {row.international}"
    if row.first is not None and not merchant.first_payout_done:
        return row.first, f"{row.code} first payout {row.first}"
    assert row.default is not None  # the loader requires it on every non-weekly row
    scope = " domestic" if row.international is not None else ""
    return row.default, f"{row.code}{scope} {row.default}"


def _weekly(
    row: CountryRow, rule: WeeklyRule, merchant: MerchantAccount, local_day: date
) -> Schedule:
    """The first payout weekday at least `cutoff` business days after day 0.

    The payout weekday itself is not moved off a holiday: the seed only says which
    payments a weekly payout includes.
    """
    weekday = merchant.payout_weekday
    if weekday is None:
        raise SettlementConfigError(
            f"payout_weekday: required for weekly settlement in {row.code} "
            f"(merchant {merchant.psp}/{merchant.currency})"
        )
    calendar = row.holiday_calendar
    day0 = _business_day_on_or_after(local_day, calendar)
    cutoff = _add_business_days(day0, rule.cutoff_business_days, calendar)
    payout = cutoff + timedelta(days=(weekday - cutoff.weekday()) % 7)
    label = (
        f"{row.code} weekly on {WEEKDAYS[weekday].title()}, "
        f"{rule.cutoff_business_days} business days cutoff"
    )
    return Schedule(payout, label)
