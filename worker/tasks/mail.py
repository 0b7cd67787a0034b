"""Mail outbox task: triggered after a mail is queued and on the beat schedule."""

from __future__ import annotations

from typing import Any

from config import get_settings
from worker.celery import app
from worker.clock import parse_as_of
from worker.services import mail
from worker.tasks.base import DbTask


@app.task(name="balance.mail.send_pending", base=DbTask, bind=True)
def send_pending(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Send the mails due as of `as_of` (default now): `{sent, retried, failed}`."""
    settings = get_settings()
    return mail.send_pending(self.uow, mail.transport_for(settings), settings, parse_as_of(as_of))
