"""The whole beat schedule in one place. Jobs compute what is due from the database,
so a missed tick is caught up by the next one and a doubled tick does no harm."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from config import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    def every(seconds: int) -> dict[str, Any]:
        # A tick still queued when the next one is due is dropped, not piled up.
        return {"schedule": timedelta(seconds=seconds), "options": {"expires": seconds}}

    return {
        "events-relay": {
            "task": "balance.events.relay",
            **every(settings.events_relay_interval_seconds),
        },
        "mail-send": {
            "task": "balance.mail.send_pending",
            **every(settings.mail_send_interval_seconds),
        },
        "auto-reload-sweep": {
            "task": "balance.auto_reload.sweep",
            **every(settings.auto_reload_interval_seconds),
        },
        "alerts-scan": {
            "task": "balance.alerts.scan",
            **every(settings.alert_scan_interval_seconds),
        },
        "settlement-roll-forward": {
            "task": "balance.settlement.roll_forward",
            **every(settings.settlement_interval_seconds),
        },
        "payments-sync": {
            "task": "balance.payments.sync_pending",
            **every(settings.payment_sync_interval_seconds),
        },
        "ledger-audit": {
            "task": "balance.ledger.audit",
            "schedule": crontab(minute=17),
            "options": {"expires": 3600},
        },
        # Retention: published events and finished mails past their days (and, embedded,
        # the broker's delivered messages). Off the audit's minute.
        "outbox-purge": {
            "task": "balance.outbox.purge",
            "schedule": crontab(minute=43),
            "options": {"expires": 3600},
        },
    }
