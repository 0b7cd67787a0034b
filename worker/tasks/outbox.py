"""Retention job for what we feed: `balance.outbox.purge` (beat hourly; `jobs run purge`)."""

from __future__ import annotations

from typing import Any

from config import get_settings
from worker import embedded_broker
from worker.celery import app
from worker.clock import parse_as_of
from worker.services import retention
from worker.tasks.base import DbTask


@app.task(name="balance.outbox.purge", base=DbTask, bind=True)
def purge(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Delete published events and finished mails past their retention as of `as_of`
    (default now), and in embedded mode the broker's delivered messages:
    `{events, mails_sent, mails_failed, broker_messages, more}`.

    A run spends at most half of `TASK_SOFT_TIME_LIMIT`; `more` says rows were left for the
    next run (hourly)."""
    settings = get_settings()
    budget = settings.task_soft_time_limit_seconds / 2
    result = retention.purge(
        self.uow,
        parse_as_of(as_of),
        retention.Retention.from_settings(settings),
        budget_seconds=budget * 0.8,
        # Where LogTransport writes (mails sent before an SMTP_HOST was set are there too).
        mail_folder=settings.balance_home.resolve() / "mail",
    )
    deleted, more = embedded_broker.purge_delivered(
        settings.effective_broker_url, budget_seconds=budget * 0.2
    )
    result["broker_messages"] = deleted
    result["more"] = result["more"] or more
    return result
