"""Settings: a bad value stops start-up with one message naming the setting; secrets stay secret."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from config import Settings, SettingsError, get_settings, reset_settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Change the environment for one test; the session's settings come back afterwards."""
    monkeypatch.chdir(tmp_path)  # no stray .env file
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def _error(env: pytest.MonkeyPatch, name: str, value: str) -> str:
    env.setenv(name, value)
    reset_settings()
    with pytest.raises(SettingsError) as info:
        get_settings()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults(env: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "DEFAULT_CURRENCY"):
        env.delenv(name, raising=False)
    env.delenv("DEPLETION_FLOOR", raising=False)
    env.delenv("BALANCE_HOME", raising=False)
    env.delenv("EVENTS_TASK", raising=False)
    env.delenv("EVENTS_QUEUE", raising=False)
    settings = get_settings()
    assert settings.embedded
    assert settings.default_currency == "EUR"
    assert settings.depletion_floor == Decimal("0")
    assert isinstance(settings.depletion_floor, Decimal)
    assert settings.events_task == "balance.events.publish"
    assert settings.events_queue == "events"
    assert settings.balance_home == Path("./.balance")
    assert settings.effective_database_url.startswith("sqlite")
    assert settings.effective_database_url.endswith("/.balance/balance.db")


def test_database_url_nonsense_is_refused_by_name(env: pytest.MonkeyPatch) -> None:
    message = _error(env, "DATABASE_URL", "nonsense")
    assert message.startswith("DATABASE_URL")


def test_unsupported_database_driver_is_refused_without_echoing_password(
    env: pytest.MonkeyPatch,
) -> None:
    message = _error(env, "DATABASE_URL", "mysql://admin:s3cr3tpw@db.example/prod")
    assert message.startswith("DATABASE_URL")
    assert "s3cr3tpw" not in message


def test_default_currency_euro_is_refused_by_name(env: pytest.MonkeyPatch) -> None:
    message = _error(env, "DEFAULT_CURRENCY", "EURO")
    assert message.startswith("DEFAULT_CURRENCY")
    assert "EURO" in message


def test_default_currency_is_normalised(env: pytest.MonkeyPatch) -> None:
    env.setenv("DEFAULT_CURRENCY", "jpy")
    reset_settings()
    assert get_settings().default_currency == "JPY"


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "NaN", "Infinity", "0.1234567", ""])
def test_depletion_floor_refused(env: pytest.MonkeyPatch, value: str) -> None:
    message = _error(env, "DEPLETION_FLOOR", value)
    assert message.startswith("DEPLETION_FLOOR")


@pytest.mark.parametrize("value", ["0", "1", "2.50", "0.000001"])
def test_depletion_floor_accepted_exactly(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("DEPLETION_FLOOR", value)
    reset_settings()
    floor = get_settings().depletion_floor
    assert isinstance(floor, Decimal)
    assert floor == Decimal(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROKER_URL", "nonsense"),
        ("SMTP_PORT", "abc"),
        ("SMTP_PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
        ("TASK_TIME_LIMIT", "0"),
        ("DEFAULT_CURRENCY", "XXX"),  # issue fixred 4: X-codes that are no currency
        ("DEFAULT_CURRENCY", "XAU"),
        ("USD_DISPLAY_RATES", "XDR=1.3"),
        ("BRAINTREE_MERCHANT_ACCOUNTS", "XTS=acme_test"),
    ],
)
def test_other_bad_values_are_refused_by_name(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert _error(env, name, value).startswith(name)


def test_smtp_password_is_secret(env: pytest.MonkeyPatch) -> None:
    env.setenv("SMTP_PASSWORD", "hunter2-very-secret")
    reset_settings()
    settings = get_settings()
    assert isinstance(settings.smtp_password, SecretStr)
    assert settings.smtp_password.get_secret_value() == "hunter2-very-secret"
    assert "hunter2-very-secret" not in repr(settings)
    assert "hunter2-very-secret" not in str(settings)
    assert "hunter2-very-secret" not in settings.model_dump_json()


def test_visibility_timeout_must_exceed_time_limit(env: pytest.MonkeyPatch) -> None:
    env.setenv("TASK_TIME_LIMIT", "300")
    env.setenv("TASK_SOFT_TIME_LIMIT", "240")
    for value in ("300", "120"):
        message = _error(env, "BROKER_VISIBILITY_TIMEOUT", value)
        assert message.startswith("BROKER_VISIBILITY_TIMEOUT")
    env.setenv("BROKER_VISIBILITY_TIMEOUT", "301")
    reset_settings()
    assert get_settings().broker_visibility_timeout_seconds == 301


def test_soft_limit_must_be_below_hard_limit(env: pytest.MonkeyPatch) -> None:
    env.setenv("TASK_TIME_LIMIT", "300")
    message = _error(env, "TASK_SOFT_TIME_LIMIT", "300")
    assert message.startswith("TASK_SOFT_TIME_LIMIT")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://user:pw@db.example:5432/ledger",
            "postgresql+psycopg://user:pw@db.example:5432/ledger",
        ),
        ("postgres://user@db.example/ledger", "postgresql+psycopg://user@db.example/ledger"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
    ],
)
def test_postgresql_url_is_normalised_to_psycopg(
    env: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    env.setenv("DATABASE_URL", given)
    reset_settings()
    settings = get_settings()
    assert settings.database_url == expected
    assert settings.effective_database_url == expected
    assert not settings.embedded


def test_direct_construction_matches_env_names() -> None:
    settings = Settings(DEFAULT_CURRENCY="GBP", DEPLETION_FLOOR="1.5")  # type: ignore[call-arg]
    assert settings.default_currency == "GBP"
    assert settings.depletion_floor == Decimal("1.5")


def _start(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **extra}
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEFAULT_CURRENCY", "EURO"), ("DATABASE_URL", "nonsense"), ("DEPLETION_FLOOR", "-1")],
)
def test_celery_start_up_stops_with_one_line(tmp_path: Path, name: str, value: str) -> None:
    result = _start(["celery", "-A", "worker", "report"], tmp_path, **{name: value})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert name in lines[0]


def test_balancectl_start_up_stops_with_one_line(tmp_path: Path) -> None:
    result = _start(
        ["worker.cli", "accounts", "show", "acc_x", "--json"], tmp_path, DEFAULT_CURRENCY="EURO"
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "DEFAULT_CURRENCY" in lines[0]
