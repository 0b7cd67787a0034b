"""The one Settings object. Env names are the public contract (CONTRACT.md).

A bad value stops start-up with a single line naming the setting and the reason,
never with a traceback and never echoing a secret.
Longer than 400 lines on purpose: CONTRACT.md wants one Settings object, so every
setting and its start-up check live here; domain parsers sit in their packages.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.kernel import bank_settings
from worker.kernel.money import is_currency

_DECIMAL_RE = re.compile(r"^-?[0-9]{1,14}(\.[0-9]{1,6})?$")
_DB_DRIVERS = {"postgresql+psycopg", "sqlite", "sqlite+pysqlite"}
# The most HTTP requests a real adapter makes for one charge (Braintree: search ids, fetch,
# sale; PayPal: token, create order, capture): a charge's worst case must fit in its lease.
PSP_REQUESTS_PER_CHARGE = 3
_BROKER_SCHEMES = ("redis://", "rediss://", "sqla+sqlite://", "memory://", "amqp://", "pyamqp://")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


def _decimal_setting(value: Any, name: str) -> Decimal:
    """An amount or rate setting, in the exact grammar of input amounts (CONTRACT.md): white
    space, signs other than a leading '-', exponents and non-ASCII digits are refused."""
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str) or not _DECIMAL_RE.fullmatch(value):
        raise ValueError(f"{name} must be a decimal string like '0' or '2.50' (no spaces)")
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - regex already guards
        raise ValueError(f"{name} is not a decimal") from exc


def _database_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    # SQLAlchemy is imported only when DATABASE_URL is set: the embedded default's reads
    # (`accounts show`) never import it (fast CLI, issue 18).
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError("not a database URL (expected postgresql+psycopg://...)") from exc
    driver = url.drivername
    if driver in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
        driver = url.drivername
    if driver not in _DB_DRIVERS:
        raise ValueError(f"driver {driver!r} is not supported (use postgresql+psycopg or sqlite)")
    return url.render_as_string(hide_password=False)


def _psp_base_url(value: str) -> str:
    """A PSP API's origin: scheme, host and port only (`https://api-m.paypal.com`)."""
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?/?", value.strip()):
        raise ValueError("must be an http(s) URL of a host, like https://api-m.paypal.com")
    return value.strip().rstrip("/")


def _parse_merchant_accounts(value: str) -> dict[str, str]:
    """`EUR=acme_eur,USD=acme_usd` -> {currency: Braintree merchant account id}."""
    accounts: dict[str, str] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        code, sep, account = part.partition("=")
        code, account = code.strip().upper(), account.strip()
        if not sep or not is_currency(code) or not re.fullmatch(r"[A-Za-z0-9_-]+", account):
            raise ValueError(
                f"{part[:40]!r} is not CURRENCY=MERCHANT_ACCOUNT_ID (e.g. EUR=acme_eur)"
            )
        accounts[code] = account
    return accounts


def _parse_rates(value: str) -> dict[str, Decimal]:
    """`EUR=1.0862,GBP=1.2710` -> {currency: USD per unit}; exact decimals, positive.

    The list is exact too: no white space around the commas, the `=` or the rates."""
    rates: dict[str, Decimal] = {}
    for part in value.split(","):
        if not part:
            continue
        code, sep, raw = part.partition("=")
        code = code.upper()
        if not sep or not is_currency(code):
            raise ValueError(f"{part!r} is not CURRENCY=RATE (e.g. EUR=1.0862)")
        rate = _decimal_setting(raw, "USD_DISPLAY_RATES")
        if rate <= 0:
            raise ValueError(f"{part!r}: the rate must be positive")
        rates[code] = rate
    return rates


class Settings(BaseSettings):
    """Everything the fleet reads from its environment."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    broker_url: str | None = Field(default=None, alias="BROKER_URL")
    result_backend: str | None = Field(default=None, alias="RESULT_BACKEND")
    balance_home: Path = Field(default=Path("./.balance"), alias="BALANCE_HOME")

    default_currency: str = Field(default="EUR", alias="DEFAULT_CURRENCY")
    depletion_floor: Decimal = Field(default=Decimal("0"), alias="DEPLETION_FLOOR")

    smtp_host: str | None = Field(default=None, alias="SMTP_HOST")
    smtp_port: int = Field(default=587, alias="SMTP_PORT", ge=1, le=65535)
    smtp_username: str | None = Field(default=None, alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(default=None, alias="SMTP_PASSWORD")
    smtp_starttls: bool = Field(default=False, alias="SMTP_STARTTLS")
    smtp_timeout_seconds: float = Field(default=10.0, alias="SMTP_TIMEOUT_SECONDS", gt=0)
    mail_from: str = Field(default="billing@balance-worker.invalid", alias="MAIL_FROM")
    mail_max_attempts: int = Field(default=12, alias="MAIL_MAX_ATTEMPTS", ge=1, le=100)
    mail_retry_base_seconds: int = Field(default=60, alias="MAIL_RETRY_BASE_SECONDS", ge=1)
    mail_retry_max_seconds: int = Field(default=6 * 3600, alias="MAIL_RETRY_MAX_SECONDS", ge=1)

    events_task: str = Field(default="balance.events.publish", alias="EVENTS_TASK")
    events_queue: str = Field(default="events", alias="EVENTS_QUEUE")
    # Nothing we feed grows without bound: the relay stops filling the events queue at this
    # length (the compose Redis runs noeviction: a full Redis stops the whole fleet), and
    # published events and finished mails are deleted after their retention.
    events_queue_max: int = Field(default=100_000, alias="EVENTS_QUEUE_MAX", ge=1, le=100_000_000)
    events_retention_days: int = Field(default=30, alias="EVENTS_RETENTION_DAYS", ge=1, le=36_500)
    mail_retention_days: int = Field(default=30, alias="MAIL_RETENTION_DAYS", ge=1, le=36_500)
    mail_failed_retention_days: int = Field(
        default=90, alias="MAIL_FAILED_RETENTION_DAYS", ge=1, le=36_500
    )

    task_queue: str = Field(default="balance", alias="TASK_QUEUE")
    task_soft_time_limit_seconds: int = Field(default=240, alias="TASK_SOFT_TIME_LIMIT", ge=1)
    task_time_limit_seconds: int = Field(default=300, alias="TASK_TIME_LIMIT", ge=1)
    broker_visibility_timeout_seconds: int = Field(
        default=3600, alias="BROKER_VISIBILITY_TIMEOUT", ge=60
    )
    db_pool_size: int = Field(default=5, alias="DB_POOL_SIZE", ge=1, le=100)
    db_max_overflow: int = Field(default=5, alias="DB_MAX_OVERFLOW", ge=0, le=100)

    events_relay_interval_seconds: int = Field(default=30, alias="EVENTS_RELAY_INTERVAL", ge=1)
    mail_send_interval_seconds: int = Field(default=60, alias="MAIL_SEND_INTERVAL", ge=1)
    beat_lock_timeout_seconds: int = Field(default=60, alias="BEAT_LOCK_TIMEOUT", ge=5)

    log_level: str = Field(default="INFO", alias="LOG_LEVEL")

    # PSPs. The sandbox stubs need no credentials; real adapters read theirs from here.
    psp_enabled_list: str = Field(default="braintree,paypal,bank_transfer", alias="PSP_ENABLED")
    braintree_merchant_id: str | None = Field(default=None, alias="BRAINTREE_MERCHANT_ID")
    braintree_public_key: str | None = Field(default=None, alias="BRAINTREE_PUBLIC_KEY")
    braintree_private_key: SecretStr | None = Field(default=None, alias="BRAINTREE_PRIVATE_KEY")
    paypal_client_id: str | None = Field(default=None, alias="PAYPAL_CLIENT_ID")
    paypal_client_secret: SecretStr | None = Field(default=None, alias="PAYPAL_CLIENT_SECRET")
    # Real adapters (braintree_gateway, paypal_rest): where they talk and how long they wait.
    braintree_environment: str = Field(default="sandbox", alias="BRAINTREE_ENVIRONMENT")
    # A local fake of Braintree's API instead of the environment's host (tests): http(s)://h:p
    braintree_base_url: str | None = Field(default=None, alias="BRAINTREE_BASE_URL")
    # Braintree charges in the merchant account's currency: "EUR=acme_eur,USD=acme_usd".
    braintree_merchant_accounts_list: str = Field(default="", alias="BRAINTREE_MERCHANT_ACCOUNTS")
    paypal_base_url: str = Field(
        default="https://api-m.sandbox.paypal.com", alias="PAYPAL_BASE_URL"
    )
    psp_http_timeout_seconds: float = Field(
        default=30.0, alias="PSP_HTTP_TIMEOUT_SECONDS", gt=0, le=120
    )
    psp_stub_latency_ms: int = Field(default=0, alias="PSP_STUB_LATENCY_MS", ge=0, le=600_000)
    psp_stub_timeout_amounts_list: str = Field(default="", alias="PSP_STUB_TIMEOUT_AMOUNTS")
    psp_stub_timeout_rate: Decimal = Field(default=Decimal("0"), alias="PSP_STUB_TIMEOUT_RATE")
    psp_stub_database_url: str | None = Field(default=None, alias="PSP_STUB_DATABASE_URL")
    charge_lease_seconds: int = Field(default=360, alias="CHARGE_LEASE_SECONDS", ge=10)
    auto_reload_interval_seconds: int = Field(default=360, alias="AUTO_RELOAD_INTERVAL", ge=10)
    auto_reload_backoff_seconds: int = Field(default=3600, alias="AUTO_RELOAD_BACKOFF", ge=0)
    auto_reload_disable_after: int = Field(
        default=3, alias="AUTO_RELOAD_DISABLE_AFTER_DECLINES", ge=1, le=100
    )
    auto_reload_max_per_day: int = Field(default=10, alias="AUTO_RELOAD_MAX_PER_DAY", ge=1)
    auto_reload_max_amount_per_month: Decimal = Field(
        default=Decimal("10000"), alias="AUTO_RELOAD_MAX_AMOUNT_PER_MONTH"
    )
    auto_reload_soft_retries: int = Field(default=3, alias="AUTO_RELOAD_SOFT_RETRIES", ge=0)
    auto_reload_soft_retry_max_seconds: int = Field(
        default=1800, alias="AUTO_RELOAD_SOFT_RETRY_MAX", ge=1
    )
    # Back-off after a reload charge is exhausted by soft failures: base, doubling per
    # exhausted charge in a row, up to the cap; the customer is told after FAILING_AFTER.
    auto_reload_soft_backoff_seconds: int = Field(
        default=3600, alias="AUTO_RELOAD_SOFT_BACKOFF", ge=60, le=7 * 86400
    )
    auto_reload_soft_backoff_max_seconds: int = Field(
        default=86400, alias="AUTO_RELOAD_SOFT_BACKOFF_MAX", ge=60, le=30 * 86400
    )
    auto_reload_failing_after: int = Field(
        default=3, alias="AUTO_RELOAD_FAILING_AFTER", ge=1, le=100
    )
    auto_reload_batch_size: int = Field(default=40, alias="AUTO_RELOAD_BATCH_SIZE", ge=1, le=500)
    auto_reload_batch_seconds: int = Field(
        default=2, alias="AUTO_RELOAD_BATCH_SECONDS", ge=1, le=3600
    )
    auto_reload_burst_count: int = Field(default=3, alias="AUTO_RELOAD_BURST_COUNT", ge=2)
    auto_reload_burst_window_seconds: int = Field(
        default=600, alias="AUTO_RELOAD_BURST_WINDOW", ge=1
    )
    urgent_queue: str = Field(default="balance.urgent", alias="URGENT_QUEUE")
    bulk_queue: str = Field(default="balance.bulk", alias="BULK_QUEUE")
    outbox_queue: str = Field(default="balance.outbox", alias="OUTBOX_QUEUE")
    payment_sync_interval_seconds: int = Field(default=60, alias="PAYMENT_SYNC_INTERVAL", ge=1)
    payment_sync_attention_after: int = Field(default=8, alias="PAYMENT_SYNC_ATTENTION_AFTER", ge=1)
    # A bank-transfer refund waiting for the customer's account (`requires_details`): days
    # until one reminder mail, and days until it fails (`details_not_received`, money back).
    refund_details_reminder_days: int = Field(
        default=7, alias="REFUND_DETAILS_REMINDER_DAYS", ge=1, le=365
    )
    refund_details_expire_days: int = Field(
        default=30, alias="REFUND_DETAILS_EXPIRE_DAYS", ge=1, le=365
    )
    alert_scan_interval_seconds: int = Field(default=3600, alias="ALERT_SCAN_INTERVAL", ge=60)
    alert_batch_size: int = Field(default=100, alias="ALERT_BATCH_SIZE", ge=1, le=10_000)
    top_up_url: str | None = Field(default=None, alias="TOP_UP_URL")
    # Display only: USD per unit of an account currency, e.g. "EUR=1.0862,GBP=1.2710".
    usd_display_rates_list: str = Field(default="", alias="USD_DISPLAY_RATES")
    # The ECB's euro reference rates (worker/fx): fetched daily by beat when set, e.g.
    # https://www.ecb.europa.eu/stats/eurofxref/eurofxref-daily.xml; USD_DISPLAY_RATES
    # stays the fallback while no rate is stored.
    fx_rates_url: str | None = Field(default=None, alias="FX_RATES_URL")
    fx_fetch_timeout_seconds: int = Field(default=30, alias="FX_FETCH_TIMEOUT", gt=0, le=600)
    # Settlement: the PSP merchant accounts (JSON list), the default for any (psp, currency)
    # not listed, and an operator file that overrides or adds timing rows.
    psp_merchant_accounts_json: str = Field(default="", alias="PSP_MERCHANT_ACCOUNTS")
    psp_merchant_country: str = Field(default="GB", alias="PSP_MERCHANT_COUNTRY")
    psp_merchant_timezone: str = Field(default="UTC", alias="PSP_MERCHANT_TIMEZONE")
    settlement_timing_file: Path | None = Field(default=None, alias="SETTLEMENT_TIMING_FILE")
    settlement_interval_seconds: int = Field(default=900, alias="SETTLEMENT_INTERVAL", ge=10)
    settlement_batch_size: int = Field(default=500, alias="SETTLEMENT_BATCH_SIZE", ge=1, le=10_000)
    # Invoices and bank transfers (worker/invoices, worker/bank; parsed in worker/kernel/
    # bank_settings.py so the domains and this start-up check read them one way).
    bank_accounts_json: str = Field(default="", alias="BANK_ACCOUNTS")
    bank_transfer_tolerance_list: str = Field(
        default="EUR=20,USD=20", alias="BANK_TRANSFER_TOLERANCE"
    )
    invoice_issuer_json: str = Field(default="", alias="INVOICE_ISSUER")
    card_invoice_max_delay_seconds: int = Field(
        default=259200, alias="CARD_INVOICE_MAX_DELAY", ge=0, le=90 * 86400
    )
    invoice_timezone: str = Field(default="UTC", alias="INVOICE_TIMEZONE")
    invoice_interval_seconds: int = Field(default=900, alias="INVOICE_INTERVAL", ge=10)
    # Virtual numbers: days an unpaid renewal is kept before the number is cancelled, and
    # seconds an account may stay depleted before its (suspended) numbers are cancelled.
    number_grace_days: int = Field(default=3, alias="NUMBER_GRACE_DAYS", ge=0, le=90)
    number_cancel_after_depletion_seconds: int = Field(
        default=259200, alias="NUMBER_CANCEL_AFTER_DEPLETION", ge=0, le=90 * 86400
    )
    fees_collect_interval_seconds: int = Field(default=3600, alias="FEES_COLLECT_INTERVAL", ge=60)
    fees_batch_size: int = Field(default=100, alias="FEES_BATCH_SIZE", ge=1, le=10_000)

    @field_validator("broker_url", "result_backend")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(_BROKER_SCHEMES) and not value.startswith("db+"):
            raise ValueError("not a supported broker URL (expected redis://host:port/db)")
        return value

    @field_validator("default_currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        code = value.strip().upper()
        if not is_currency(code):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return code

    @field_validator("depletion_floor", mode="before")
    @classmethod
    def _check_floor(cls, value: Any) -> Decimal:
        floor = _decimal_setting(value, "DEPLETION_FLOOR")
        if floor < 0:
            raise ValueError("must be zero or positive")
        return floor

    @field_validator("psp_enabled_list")
    @classmethod
    def _check_psps(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        bad = [n for n in names if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", n)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a PSP name (e.g. braintree,paypal)")
        return ",".join(names)

    @field_validator("braintree_environment")
    @classmethod
    def _check_braintree_environment(cls, value: str) -> str:
        env = value.strip().lower()
        if env not in {"sandbox", "production"}:
            raise ValueError("must be sandbox or production")
        return env

    @field_validator("braintree_base_url")
    @classmethod
    def _check_braintree_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _psp_base_url(value)

    @field_validator("paypal_base_url")
    @classmethod
    def _check_paypal_base_url(cls, value: str) -> str:
        return _psp_base_url(value)

    @field_validator("braintree_merchant_accounts_list")
    @classmethod
    def _check_braintree_merchant_accounts(cls, value: str) -> str:
        _parse_merchant_accounts(value)
        return value

    @field_validator("psp_stub_timeout_amounts_list")
    @classmethod
    def _check_timeout_amounts(cls, value: str) -> str:
        for part in value.split(","):
            if part:
                _decimal_setting(part, "PSP_STUB_TIMEOUT_AMOUNTS")
        return value

    @field_validator("auto_reload_max_amount_per_month", mode="before")
    @classmethod
    def _check_month_cap(cls, value: Any) -> Decimal:
        cap = _decimal_setting(value, "AUTO_RELOAD_MAX_AMOUNT_PER_MONTH")
        if cap <= 0:
            raise ValueError("must be positive")
        return cap

    @field_validator("psp_stub_timeout_rate", mode="before")
    @classmethod
    def _check_rate(cls, value: Any) -> Decimal:
        rate = _decimal_setting(value, "PSP_STUB_TIMEOUT_RATE")
        if not 0 <= rate <= 1:
            raise ValueError("must be between 0 and 1")
        return rate

    @field_validator("top_up_url", "fx_rates_url")
    @classmethod
    def _check_top_up_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.fullmatch(r"https?://[^\s<>\"']+", value.strip()):
            raise ValueError("must be an http(s) URL")
        return value.strip()

    @field_validator("usd_display_rates_list")
    @classmethod
    def _check_usd_rates(cls, value: str) -> str:
        _parse_rates(value)
        return value

    @field_validator("bank_accounts_json")
    @classmethod
    def _check_bank_accounts(cls, value: str) -> str:
        # Unset means the packaged sandbox accounts: constants (checked by the tests), so
        # start-up skips loading python-stdnum's IBAN registry for them.
        if value.strip():
            bank_settings.bank_accounts(value)
        return value

    @field_validator("bank_transfer_tolerance_list")
    @classmethod
    def _check_tolerance(cls, value: str) -> str:
        bank_settings.tolerances(value)
        return value

    @field_validator("invoice_issuer_json")
    @classmethod
    def _check_issuer(cls, value: str) -> str:
        bank_settings.issuer(value)
        return value

    @field_validator("invoice_timezone")
    @classmethod
    def _check_invoice_timezone(cls, value: str) -> str:
        bank_settings.timezone(value)
        return value.strip()

    @field_validator("database_url", "psp_stub_database_url")
    @classmethod
    def _check_db_urls(cls, value: str | None) -> str | None:
        return _database_url(value)

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @property
    def usd_display_rates(self) -> dict[str, Decimal]:
        return _parse_rates(self.usd_display_rates_list)

    @property
    def braintree_merchant_accounts(self) -> dict[str, str]:
        """{currency: Braintree merchant account id}; a currency not listed uses the default."""
        return _parse_merchant_accounts(self.braintree_merchant_accounts_list)

    @property
    def psp_enabled(self) -> tuple[str, ...]:
        return tuple(n for n in self.psp_enabled_list.split(",") if n)

    @property
    def psp_stub_timeout_amounts(self) -> tuple[Decimal, ...]:
        parts = self.psp_stub_timeout_amounts_list.split(",")
        return tuple(Decimal(p) for p in parts if p)

    @property
    def embedded(self) -> bool:
        """True when no server is configured: SQLite file + SQLAlchemy broker."""
        return self.database_url is None

    @property
    def embedded_database_file(self) -> Path:
        """Where the embedded default keeps its database (BALANCE_HOME/balance.db)."""
        return self.balance_home.resolve() / "balance.db"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+pysqlite:///{self.embedded_database_file}"

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{self.balance_home.resolve() / 'broker.db'}"

    def check_settlement(self) -> None:
        """The timing table loads, and every merchant account's country has a row."""
        from worker.settlement import timing

        try:
            path = self.settlement_timing_file
            table = timing.cached_timing(str(path) if path is not None else None)
        except (timing.SettlementConfigError, OSError) as exc:
            raise SettingsError(f"SETTLEMENT_TIMING_FILE: {exc}") from None
        try:
            merchants = timing.parse_merchant_accounts(self.psp_merchant_accounts_json or "[]")
            default = timing.MerchantAccount(
                psp="default",
                currency=self.default_currency,
                country=self.psp_merchant_country.strip().upper(),
                timezone=self.psp_merchant_timezone,
            )
        except (timing.SettlementConfigError, ValueError) as exc:
            raise SettingsError(f"PSP_MERCHANT_ACCOUNTS: {exc}") from None
        for name, merchant in [("PSP_MERCHANT_COUNTRY", default)] + [
            ("PSP_MERCHANT_ACCOUNTS", m) for m in merchants
        ]:
            if merchant.country not in table.countries:
                raise SettingsError(
                    f"{name}: no settlement timing for country {merchant.country!r}; "
                    "add a row with SETTLEMENT_TIMING_FILE"
                )

    def check_limits(self) -> None:
        """Cross-field rules: a redelivery must never overtake a running task; a failed
        mail is kept at least as long as a sent one; a back-off's cap is not below its start;
        a refund waiting for details is reminded of before it expires."""
        if self.task_soft_time_limit_seconds >= self.task_time_limit_seconds:
            raise SettingsError("TASK_SOFT_TIME_LIMIT: must be lower than TASK_TIME_LIMIT")
        if self.charge_lease_seconds <= self.task_time_limit_seconds:
            raise SettingsError(
                "CHARGE_LEASE_SECONDS: must be larger than TASK_TIME_LIMIT "
                "(a charge in flight must be over before the janitor looks it up)"
            )
        psp_worst = PSP_REQUESTS_PER_CHARGE * 2 * self.psp_http_timeout_seconds
        if psp_worst >= self.charge_lease_seconds:
            raise SettingsError(
                f"PSP_HTTP_TIMEOUT_SECONDS: a charge makes up to {PSP_REQUESTS_PER_CHARGE} PSP "
                f"requests, each waiting up to twice this (connect, then read): "
                f"{psp_worst:g} s must stay below CHARGE_LEASE_SECONDS "
                f"({self.charge_lease_seconds})"
            )
        if self.auto_reload_soft_backoff_max_seconds < self.auto_reload_soft_backoff_seconds:
            raise SettingsError(
                "AUTO_RELOAD_SOFT_BACKOFF_MAX: must be at least AUTO_RELOAD_SOFT_BACKOFF "
                "(the cap of a back-off that starts there)"
            )
        if self.broker_visibility_timeout_seconds <= self.task_time_limit_seconds:
            raise SettingsError(
                "BROKER_VISIBILITY_TIMEOUT: must be larger than TASK_TIME_LIMIT "
                "(otherwise Redis redelivers a task that is still running)"
            )
        if self.mail_failed_retention_days < self.mail_retention_days:
            raise SettingsError(
                "MAIL_FAILED_RETENTION_DAYS: must be at least MAIL_RETENTION_DAYS "
                "(a mail that never went out is kept at least as long as one that did)"
            )
        if self.refund_details_reminder_days >= self.refund_details_expire_days:
            raise SettingsError(
                "REFUND_DETAILS_REMINDER_DAYS: must be lower than REFUND_DETAILS_EXPIRE_DAYS "
                "(the customer is reminded before the refund fails)"
            )


def _format_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = first.get("loc") or ("?",)
    name = str(loc[0]).upper()
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{name}: {msg}"


_settlement_check_deferred = False


def defer_settlement_check() -> None:
    """For one CLI process that computes no settlement date (`accounts show`, `accounts
    list`, `ledger`): skip validating the settlement timing table and its 45 holiday
    calendars (a third of such a command's start-up, the fast-CLI budget in README.md).
    Every other command, the worker and beat still validate it before anything runs, and a
    settlement computed later loads (and checks) the table itself (worker/settlement/timing.py)."""
    global _settlement_check_deferred
    _settlement_check_deferred = True
    get_settings.cache_clear()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; raises SettingsError naming the bad setting."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsError(_format_error(exc)) from None
    settings.check_limits()
    if not _settlement_check_deferred:
        settings.check_settlement()
    return settings


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
