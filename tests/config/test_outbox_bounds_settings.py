"""Issue 11 item 5: the bound and the retentions are settings validated at start-up, and the
purge job is scheduled and runnable by name."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.schedules import crontab

from config import Settings, SettingsError, get_settings, reset_settings
from worker.cli.ops import job_registry
from worker.schedule import beat_schedule

NAMES = (
    "EVENTS_QUEUE_MAX",
    "EVENTS_RETENTION_DAYS",
    "MAIL_RETENTION_DAYS",
    "MAIL_FAILED_RETENTION_DAYS",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def test_defaults(env: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.events_queue_max == 100_000
    assert settings.events_retention_days == 30
    assert settings.mail_retention_days == 30
    assert settings.mail_failed_retention_days == 90


def test_values_are_read(env: pytest.MonkeyPatch) -> None:
    env.setenv("EVENTS_QUEUE_MAX", "5000")
    env.setenv("EVENTS_RETENTION_DAYS", "7")
    env.setenv("MAIL_RETENTION_DAYS", "14")
    env.setenv("MAIL_FAILED_RETENTION_DAYS", "14")
    settings = get_settings()
    assert (
        settings.events_queue_max,
        settings.events_retention_days,
        settings.mail_retention_days,
        settings.mail_failed_retention_days,
    ) == (5000, 7, 14, 14)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENTS_QUEUE_MAX", "0"),
        ("EVENTS_QUEUE_MAX", "-5"),
        ("EVENTS_QUEUE_MAX", "lots"),
        ("EVENTS_QUEUE_MAX", "1e5"),
        ("EVENTS_RETENTION_DAYS", "0"),
        ("EVENTS_RETENTION_DAYS", "36501"),
        ("MAIL_RETENTION_DAYS", "0"),
        ("MAIL_RETENTION_DAYS", "thirty"),
        ("MAIL_FAILED_RETENTION_DAYS", "-1"),
    ],
)
def test_bad_values_are_refused_by_name(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        get_settings()
    message = str(info.value)
    assert message.startswith(f"{name}:"), message
    assert "\n" not in message


def test_failed_mails_are_kept_at_least_as_long_as_sent_ones(env: pytest.MonkeyPatch) -> None:
    env.setenv("MAIL_RETENTION_DAYS", "120")  # longer than the default 90 for failed ones
    with pytest.raises(SettingsError) as info:
        get_settings()
    assert str(info.value).startswith("MAIL_FAILED_RETENTION_DAYS: must be at least")
    env.setenv("MAIL_FAILED_RETENTION_DAYS", "120")
    reset_settings()
    assert get_settings().mail_failed_retention_days == 120


def test_celery_start_up_stops_naming_the_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "report"],
        env={**os.environ, "EVENTS_QUEUE_MAX": "0"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "EVENTS_QUEUE_MAX" in lines[0]


def test_purge_is_scheduled_hourly_and_runnable_by_name() -> None:
    entry = beat_schedule(Settings())["outbox-purge"]
    assert entry["task"] == "balance.outbox.purge"
    assert entry["options"]["expires"] == 3600
    assert entry["schedule"] == crontab(minute=43)  # off the ledger audit's minute (17)
    assert job_registry()["purge"] == ("balance.outbox.purge", True)
