"""The whole beat schedule in one place. Jobs compute what is due from the database,
so a missed tick is caught up by the next one and a doubled tick does no harm."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from config import Settings
from worker.kernel import task_names


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    def every(seconds: int) -> dict[str, Any]:
        # A tick still queued when the next one is due is dropped, not piled up.
        return {"schedule": timedelta(seconds=seconds), "options": {"expires": seconds}}

    return {
        "events-relay": {
            "task": task_names.EVENTS_RELAY,
            **every(settings.events_relay_interval_seconds),
        },
        "mail-send": {
            "task": task_names.MAIL_SEND_PENDING,
            **every(settings.mail_send_interval_seconds),
        },
        "auto-reload-sweep": {
            "task": task_names.AUTO_RELOAD_SWEEP,
            **every(settings.auto_reload_interval_seconds),
        },
        "alerts-scan": {
            "task": task_names.ALERTS_SCAN,
            **every(settings.alert_scan_interval_seconds),
        },
        "settlement-roll-forward": {
            "task": task_names.SETTLEMENT_ROLL_FORWARD,
            **every(settings.settlement_interval_seconds),
        },
        "invoices-issue-due": {
            "task": task_names.INVOICES_ISSUE_DUE,
            **every(settings.invoice_interval_seconds),
        },
        "payments-sync": {
            "task": task_names.PAYMENTS_SYNC_PENDING,
            **every(settings.payment_sync_interval_seconds),
        },
        # Refunds whose answer was lost: looked up by key, never refunded again (issue 14).
        "refunds-sync": {
            "task": task_names.REFUNDS_SYNC,
            **every(settings.payment_sync_interval_seconds),
        },
        "fees-collect": {
            "task": task_names.FEES_COLLECT,
            **every(settings.fees_collect_interval_seconds),
        },
        "ledger-audit": {
            "task": task_names.LEDGER_AUDIT,
            "schedule": crontab(minute=17),
            "options": {"expires": 3600},
        },
        # Retention: published events and finished mails past their days (and, embedded,
        # the broker's delivered messages). Off the audit's minute.
        "outbox-purge": {
            "task": task_names.OUTBOX_PURGE,
            "schedule": crontab(minute=43),
            "options": {"expires": 3600},
        },
    }
