"""The one mail sender: an outbox written with the fact it reports, sent over SMTP.

Each mail is claimed with a row lock (SKIP LOCKED) in its own transaction, sent, and
marked sent before that transaction commits, so two senders never send the same row.
A failure backs off exponentially; after MAIL_MAX_ATTEMPTS the mail is `failed` and a
`mail.failed` event says so. The Message-ID is derived from the row id, so even the
one unavoidable duplicate (a crash after the SMTP server accepted, before our commit)
carries the same Message-ID for the receiving side to fold.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

from sqlalchemy import select

from config import Settings
from worker.db.models import Mail, new_id
from worker.db.session import UnitOfWork
from worker.redaction import redact
from worker.services import events

log = logging.getLogger(__name__)

SEND_TASK = "balance.mail.send_pending"
# Errors that mean the server (not this one message) is unreachable: stop this run.
_TRANSPORT_DOWN = (OSError, smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected)


class MailTransport(Protocol):
    name: str

    def send(self, message: EmailMessage) -> None: ...


class SmtpTransport:
    """SMTP with optional STARTTLS and login; a timeout on every connection."""

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.starttls = settings.smtp_starttls
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.timeout = settings.smtp_timeout_seconds

    def send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls()
                smtp.ehlo()
            if self.username and self.password is not None:
                smtp.login(self.username, self.password.get_secret_value())
            smtp.send_message(message)


class LogTransport:
    """No SMTP_HOST configured: the mail is written to the log instead."""

    name = "log"

    def send(self, message: EmailMessage) -> None:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        log.info(
            "mail (no SMTP_HOST) to=%s subject=%r\n%s", message["To"], message["Subject"], text
        )


def transport_for(settings: Settings) -> MailTransport:
    return SmtpTransport(settings) if settings.smtp_host else LogTransport()


def queue(
    uow: UnitOfWork,
    *,
    dedupe_key: str,
    kind: str,
    recipients: Sequence[str],
    subject: str,
    text_body: str,
    html_body: str | None = None,
    account_id: str | None = None,
    now: datetime,
) -> Mail | None:
    """Add a mail to the outbox of the current transaction, once per `dedupe_key`."""
    if not recipients:
        log.warning(
            "mail %s for account %s not queued: no invoice-and-alert address", kind, account_id
        )
        return None
    existing = uow.session.scalars(select(Mail).where(Mail.dedupe_key == dedupe_key)).one_or_none()
    if existing is not None:
        return existing
    mail = Mail(
        id=new_id("mail"),
        dedupe_key=dedupe_key,
        account_id=account_id,
        kind=kind,
        recipients=list(recipients),
        subject=redact(subject) or "",
        text_body=redact(text_body) or "",
        html_body=redact(html_body),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    uow.session.add(mail)
    uow.enqueue(SEND_TASK)
    return mail


def build_message(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(mail.recipients)
    message["Subject"] = mail.subject
    message["Message-ID"] = f"<{mail.id}@balance-worker>"
    message["Date"] = format_datetime(mail.created_at)
    message.set_content(mail.text_body)
    if mail.html_body:
        message.add_alternative(mail.html_body, subtype="html")
    return message


def backoff(attempts: int, settings: Settings) -> timedelta:
    seconds = min(
        settings.mail_retry_base_seconds * 2 ** max(attempts - 1, 0),
        settings.mail_retry_max_seconds,
    )
    return timedelta(seconds=seconds)


def send_pending(
    uow: UnitOfWork, transport: MailTransport, settings: Settings, now: datetime, limit: int = 100
) -> dict[str, Any]:
    """Send mails that are due as of `now`, one transaction per mail."""
    sent = retried = failed = 0
    for _ in range(limit):
        mail = uow.session.scalars(
            select(Mail)
            .where(Mail.status == "pending", Mail.next_attempt_at <= now)
            .order_by(Mail.next_attempt_at, Mail.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).one_or_none()
        if mail is None:
            break
        mail.attempts += 1
        try:
            transport.send(build_message(mail, settings.mail_from))
        except (smtplib.SMTPException, OSError) as exc:
            mail.last_error = (redact(f"{type(exc).__name__}: {exc}") or "")[:500]
            if mail.attempts >= settings.mail_max_attempts:
                mail.status = "failed"
                failed += 1
                events.record(
                    uow,
                    "mail.failed",
                    mail.account_id,
                    {
                        "mail_id": mail.id,
                        "kind": mail.kind,
                        "attempts": mail.attempts,
                        "error": mail.last_error,
                    },
                    now,
                )
                log.error(
                    "mail %s (%s) failed for good after %d attempts: %s",
                    mail.id,
                    mail.kind,
                    mail.attempts,
                    mail.last_error,
                )
            else:
                mail.next_attempt_at = now + backoff(mail.attempts, settings)
                retried += 1
                log.warning(
                    "mail %s (%s) attempt %d failed, next at %s: %s",
                    mail.id,
                    mail.kind,
                    mail.attempts,
                    mail.next_attempt_at.isoformat(),
                    mail.last_error,
                )
            uow.commit()
            if isinstance(exc, _TRANSPORT_DOWN):
                break
            continue
        mail.status = "sent"
        mail.sent_at = now
        mail.transport = transport.name
        mail.last_error = None
        uow.commit()
        sent += 1
        log.info(
            "mail %s (%s) sent via %s to %d recipient(s)",
            mail.id,
            mail.kind,
            transport.name,
            len(mail.recipients),
        )
    return {"sent": sent, "retried": retried, "failed": failed}
