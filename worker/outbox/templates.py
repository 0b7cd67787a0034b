"""Longer than 400 lines on purpose: one render function per mail, all sharing `_Mail`.

Customer mail bodies (subject, text, HTML) rendered from Jinja2 templates per locale.

Pure: no database, no SMTP; `worker.outbox.mail` queues and sends what this returns.
The wording lives in `worker/templates/mail/<locale>/`, so translators never touch Python.

Money is Decimal and is never rounded silently: a figure shows the currency's usual
digits, plus any further digits the balance really has (prices are sub-cent, 0.0075 EUR).
The one rounding here is `display_equivalent`, for the USD figure shown beside the
account-currency figure and marked as display only: customers are charged in their
account currency.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any
from urllib.parse import urlsplit

from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from worker.kernel.money import exponent, to_minor_units

LOCALES = ("en", "ja", "zh")
DEFAULT_LOCALE = "en"
_BABEL_LOCALE = {"en": "en", "ja": "ja", "zh": "zh_Hans_CN"}  # zh is Simplified Chinese
_HTML_LANG = {"en": "en", "ja": "ja", "zh": "zh-Hans"}
DISPLAY_CURRENCY = "USD"


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@functools.cache
def environment() -> Environment:
    """One Environment per process: it caches compiled templates.

    Autoescape is on for `.html.j2` only; plain text must show a name like `<b>` as typed.
    StrictUndefined turns a misspelt variable into an error rather than a silent gap.
    """
    return Environment(
        loader=PackageLoader("worker", "templates/mail"),
        autoescape=select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False, default=False
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def resolve_locale(locale: str) -> str:
    """The template locale for `locale`; anything unknown falls back to English."""
    code = locale.strip().lower()
    return code if code in LOCALES else DEFAULT_LOCALE


def display_equivalent(amount: Decimal, rate: Decimal, currency: str = DISPLAY_CURRENCY) -> Decimal:
    """`amount` × `rate` in `currency`'s minor unit, rounded once, half-even (display only).

    The product is computed exactly (enough precision for every digit), so the rounding
    to minor units by `worker.kernel.money.to_minor_units` is the only one.
    """
    _require_decimal("amount", amount)
    _require_decimal("rate", rate)
    with localcontext() as ctx:
        ctx.prec = max(ctx.prec, len(amount.as_tuple().digits) + len(rate.as_tuple().digits) + 2)
        minor = to_minor_units(amount * rate, currency)
    return Decimal(minor).scaleb(-exponent(currency))


def format_money(amount: Decimal, currency: str, locale: str) -> str:
    """`amount` for `locale` with the currency's usual digits, or more when it has them."""
    _require_decimal("amount", amount)
    if amount.is_zero():
        amount = amount.copy_abs()  # never "-€0.00"
    text: str = format_currency(
        amount, currency, locale=_BABEL_LOCALE[resolve_locale(locale)], decimal_quantization=False
    )
    return text


def format_moment(moment: datetime, locale: str) -> str:
    """`moment` in UTC for `locale`, with the zone shown (customers live in every zone)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a naive datetime is ambiguous: give it a UTC offset")
    text: str = format_datetime(
        moment.astimezone(UTC), "long", tzinfo=UTC, locale=_BABEL_LOCALE[resolve_locale(locale)]
    )
    return text


def render_low_balance(
    *,
    locale: str,
    account_name: str,
    account_id: str,
    balance: Decimal,
    threshold: Decimal,
    currency: str,
    checked_at: datetime,
    display_currency: str,
    usd_rate: Decimal | None,
    top_up_url: str | None,
    auto_reload_enabled: bool,
    days_left: int | None = None,
    daily_spend: Decimal | None = None,
) -> RenderedMail:
    """The balance fell below the customer's alert threshold (API still works).

    `days_left` / `daily_spend`: the runway (worker/accounts/runway.py), said as "about 3
    days left at your current spend" when the account spent anything in the last 7 days."""
    mail = _Mail(locale, account_name, account_id, currency, display_currency, usd_rate)
    return mail.render(
        "low_balance",
        balance=mail.money(balance),
        threshold=mail.money(threshold),
        threshold_amount=format_money(threshold, currency, mail.locale),
        checked_at=format_moment(checked_at, mail.locale),
        top_up_url=_url(top_up_url),
        auto_reload_enabled=bool(auto_reload_enabled),
        days_left=days_left,
        daily_spend=None if daily_spend is None else mail.money(daily_spend),
    )


def render_depleted(
    *,
    locale: str,
    account_name: str,
    account_id: str,
    balance: Decimal,
    currency: str,
    floor: Decimal,
    occurred_at: datetime,
    display_currency: str,
    usd_rate: Decimal | None,
    top_up_url: str | None,
    numbers: int = 0,
    numbers_cancel_at: datetime | None = None,
) -> RenderedMail:
    """The balance reached zero (or the floor): the API is stopped, numbers at risk.

    `numbers`: the account's virtual numbers now suspended, cancelled at `numbers_cancel_at`
    unless a credit comes first (at `occurred_at` or earlier: cancelled already)."""
    mail = _Mail(locale, account_name, account_id, currency, display_currency, usd_rate)
    _require_decimal("floor", floor)
    if numbers and numbers_cancel_at is None:
        raise ValueError("numbers_cancel_at is required when the account has numbers")
    return mail.render(
        "depleted",
        balance=mail.money(balance),
        floor=mail.money(floor),
        floor_is_zero=floor.is_zero(),
        occurred_at=format_moment(occurred_at, mail.locale),
        top_up_url=_url(top_up_url),
        numbers=numbers,
        numbers_cancelled=bool(numbers)
        and numbers_cancel_at is not None
        and numbers_cancel_at <= occurred_at,
        numbers_cancel_at=(
            format_moment(numbers_cancel_at, mail.locale) if numbers_cancel_at else None
        ),
    )


def render_auto_reload_disabled(
    *,
    locale: str,
    account_name: str,
    account_id: str,
    balance: Decimal,
    currency: str,
    reload_amount: Decimal,
    declines: int,
    reason: str,
    occurred_at: datetime,
    display_currency: str,
    usd_rate: Decimal | None,
    top_up_url: str | None,
) -> RenderedMail:
    """Auto-reload was turned off after `declines` declined charges in a row."""
    if isinstance(declines, bool) or not isinstance(declines, int) or declines < 1:
        raise ValueError(f"declines must be a positive int, not {declines!r}")
    mail = _Mail(locale, account_name, account_id, currency, display_currency, usd_rate)
    return mail.render(
        "auto_reload_disabled",
        balance=mail.money(balance),
        reload_amount=mail.money(reload_amount),
        declines=declines,
        reason=one_line(reason),
        occurred_at=format_moment(occurred_at, mail.locale),
        top_up_url=_url(top_up_url),
    )


def render_auto_reload_failing(
    *,
    locale: str,
    account_name: str,
    account_id: str,
    balance: Decimal,
    currency: str,
    reload_amount: Decimal,
    failures: int,
    reason: str,
    next_attempt_at: datetime,
    occurred_at: datetime,
    display_currency: str,
    usd_rate: Decimal | None,
    top_up_url: str | None,
) -> RenderedMail:
    """`failures` reload charges in a row could not be processed (the PSP was unavailable):
    auto-reload stays on and tries again from `next_attempt_at`, less often each time."""
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        raise ValueError(f"failures must be a positive int, not {failures!r}")
    mail = _Mail(locale, account_name, account_id, currency, display_currency, usd_rate)
    return mail.render(
        "auto_reload_failing",
        balance=mail.money(balance),
        reload_amount=mail.money(reload_amount),
        failures=failures,
        reason=one_line(reason),
        next_attempt_at=format_moment(next_attempt_at, mail.locale),
        occurred_at=format_moment(occurred_at, mail.locale),
        top_up_url=_url(top_up_url),
    )


def render_auto_reload_action_required(
    *,
    locale: str,
    account_name: str,
    account_id: str,
    balance: Decimal,
    currency: str,
    reload_amount: Decimal,
    reason: str,
    occurred_at: datetime,
    display_currency: str,
    usd_rate: Decimal | None,
    top_up_url: str | None,
) -> RenderedMail:
    """A reload charge needs the cardholder (3-D Secure): auto-reload is paused until the
    customer adds their card again as the default (a fresh, authenticated nonce)."""
    mail = _Mail(locale, account_name, account_id, currency, display_currency, usd_rate)
    return mail.render(
        "auto_reload_action_required",
        balance=mail.money(balance),
        reload_amount=mail.money(reload_amount),
        reason=one_line(reason),
        occurred_at=format_moment(occurred_at, mail.locale),
        top_up_url=_url(top_up_url),
    )


@dataclass(frozen=True)
class NumberLine:
    """One virtual number in a numbers mail: the MSISDN (E.164), its monthly fee, and the
    moment that matters for it (the renewal that failed, or when it was cancelled)."""

    msisdn: str
    monthly_fee: Decimal
    moment: datetime


def render_fee_payment_failed(
    *,
    locale: str,
    account_name: str,
    account_id: str,
    balance: Decimal,
    currency: str,
    display_currency: str,
    usd_rate: Decimal | None,
    top_up_url: str | None,
    numbers: list[NumberLine],
    total: Decimal,
    cancel_at: datetime,
) -> RenderedMail:
    """Monthly number fees could not be paid from the balance (seed 003: pay-with-balance
    fails with insufficient funds): they are retried as soon as the balance is credited,
    and the numbers are cancelled at `cancel_at` if still unpaid."""
    mail = _Mail(locale, account_name, account_id, currency, display_currency, usd_rate)
    return mail.render(
        "fee_payment_failed",
        balance=mail.money(balance),
        total=mail.money(total),
        numbers=[
            {
                "msisdn": one_line(n.msisdn),
                "fee": mail.money(n.monthly_fee),
                "due_at": format_moment(n.moment, mail.locale),
            }
            for n in numbers
        ],
        cancel_at=format_moment(cancel_at, mail.locale),
        top_up_url=_url(top_up_url),
    )


def render_numbers_cancelled(
    *,
    locale: str,
    account_name: str,
    account_id: str,
    balance: Decimal,
    currency: str,
    display_currency: str,
    usd_rate: Decimal | None,
    top_up_url: str | None,
    numbers: list[NumberLine],
    reason: str,
) -> RenderedMail:
    """Virtual numbers were cancelled: `reason` `unpaid` (the renewal stayed unpaid past
    the grace period) or `depleted` (the account stayed depleted; seeds 000/001)."""
    if reason not in ("unpaid", "depleted"):
        raise ValueError(f"reason must be unpaid or depleted, not {reason!r}")
    mail = _Mail(locale, account_name, account_id, currency, display_currency, usd_rate)
    return mail.render(
        "numbers_cancelled",
        balance=mail.money(balance),
        reason=reason,
        numbers=[
            {
                "msisdn": one_line(n.msisdn),
                "fee": mail.money(n.monthly_fee),
                "cancelled_at": format_moment(n.moment, mail.locale),
            }
            for n in numbers
        ],
        top_up_url=_url(top_up_url),
    )


def one_line(text: str) -> str:
    """`text` on one line: control characters and line separators become single spaces.

    Names and decline reasons come from customers and PSPs; a CR/LF in a subject would
    start new mail headers, and in a body it could forge lines.
    """
    spaced = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in str(text)
    )
    return " ".join(spaced.split())


class _Mail:
    """What every mail of one account shares: locale, names, how money is shown."""

    def __init__(
        self,
        locale: str,
        account_name: str,
        account_id: str,
        currency: str,
        display_currency: str,
        usd_rate: Decimal | None,
    ) -> None:
        self.locale = resolve_locale(locale)
        self.account_name = one_line(account_name)
        self.account_id = one_line(account_id)
        self.currency = currency
        self.usd_rate: Decimal | None = None
        shows_usd = display_currency == DISPLAY_CURRENCY != currency
        if shows_usd and usd_rate is not None:
            _require_decimal("usd_rate", usd_rate)
            if usd_rate <= 0:
                raise ValueError(f"usd_rate must be positive, not {usd_rate}")
            self.usd_rate = usd_rate

    def money(self, amount: Decimal) -> str:
        """The figure in the account currency, with the display-only USD equivalent beside it.

        Worded once, by `<locale>/money.txt.j2`, and returned as plain text so that HTML
        escapes it: a macro from a text template, called in HTML, comes back marked safe
        without escaping, so HTML templates never import text macros.
        """
        fields: dict[str, Any] = {
            "amount": format_money(amount, self.currency, self.locale),
            "currency": self.currency,
            "equivalent": None,
            "rate": None,
        }
        if self.usd_rate is not None:
            usd = display_equivalent(amount, self.usd_rate, DISPLAY_CURRENCY)
            fields["equivalent"] = format_money(usd, DISPLAY_CURRENCY, self.locale)
            fields["rate"] = format_decimal(
                self.usd_rate, locale=_BABEL_LOCALE[self.locale], decimal_quantization=False
            )
        return self._render("money.txt.j2", fields).strip()

    def render(self, kind: str, **fields: Any) -> RenderedMail:
        context = {
            "account_name": self.account_name,
            "account_id": self.account_id,
            "html_lang": _HTML_LANG[self.locale],
            **fields,
        }
        subject = one_line(self._render(f"{kind}.subject.txt.j2", context))
        text = self._render(f"{kind}.txt.j2", context)
        html = self._render(f"{kind}.html.j2", {**context, "subject": subject})
        return RenderedMail(subject=subject, text=text, html=html)

    def _render(self, name: str, context: dict[str, Any]) -> str:
        return environment().get_template(f"{self.locale}/{name}").render(context)


def _url(url: str | None) -> str | None:
    """An http(s) link or None: it is written into an href, so no `javascript:`."""
    if url is None or not url.strip():
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise ValueError(f"top_up_url must be an absolute http(s) URL, not {url[:80]!r}")
    return url


def _require_decimal(field: str, value: object) -> None:
    """Money is Decimal: a float here would already have lost digits."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{field} must be a finite Decimal, not {value!r}")
