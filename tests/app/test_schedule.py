"""The beat schedule: every job is there at its interval, and after downtime a job runs
once on the next tick; missed ticks are not replayed (jobs compute what is due)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from celery.schedules import schedule as interval

from config import Settings
from worker.schedule import beat_schedule

EXPECTED = {
    "events-relay": ("balance.events.relay", 30),
    "mail-send": ("balance.mail.send_pending", 60),
    "auto-reload-sweep": ("balance.auto_reload.sweep", 360),
    "payments-sync": ("balance.payments.sync_pending", 60),
    "alerts-scan": ("balance.alerts.scan", 3600),
    "settlement-roll-forward": ("balance.settlement.roll_forward", 900),
    "fees-collect": ("balance.fees.collect", 3600),
}


def test_every_interval_job_is_scheduled_with_its_default() -> None:
    entries = beat_schedule(Settings())
    for name, (task, seconds) in EXPECTED.items():
        assert entries[name]["task"] == task
        assert entries[name]["schedule"] == timedelta(seconds=seconds)
        # A tick still queued when the next one is due expires instead of piling up.
        assert entries[name]["options"]["expires"] == seconds
    assert entries["ledger-audit"]["task"] == "balance.ledger.audit"


def test_intervals_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_SCAN_INTERVAL", "1800")
    monkeypatch.setenv("SETTLEMENT_INTERVAL", "300")
    entries = beat_schedule(Settings())
    assert entries["alerts-scan"]["schedule"] == timedelta(seconds=1800)
    assert entries["settlement-roll-forward"]["schedule"] == timedelta(seconds=300)


@pytest.mark.parametrize("name", ["alerts-scan", "settlement-roll-forward"])
def test_after_downtime_one_run_not_a_replay_of_missed_ticks(name: str) -> None:
    every = beat_schedule(Settings())[name]["schedule"]
    back = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    tick = interval(run_every=every, nowfun=lambda: back)
    due, _ = tick.is_due(back - timedelta(hours=7))  # beat was down for 7 hours
    assert due is True
    # It ran at `back`: nothing is due again until a whole interval later.
    due_again, wait = tick.is_due(back)
    assert due_again is False
    assert wait == pytest.approx(every.total_seconds())
