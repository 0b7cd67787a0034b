"""The outboxes' models: events for other services and mails for customers, each row
written in the transaction of the fact it reports and relayed after commit."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, JsonType, sql_in


class MailStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Event(Base):
    """Transactional outbox: written with the change, relayed after commit."""

    __tablename__ = "events"
    __table_args__ = (
        Index(
            "ix_events_unpublished",
            "occurred_at",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        Index("ix_events_account", "account_id", "occurred_at"),
        # Retention: published events in publishing order (worker/outbox/retention.py).
        Index(
            "ix_events_published",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
            sqlite_where=text("published_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
    published_at: Mapped[datetime | None]
    publish_attempts: Mapped[int] = mapped_column(default=0)


class Mail(Base):
    """Mail outbox: written with the fact it reports; sent (once) by the mail task."""

    __tablename__ = "mail_outbox"
    __table_args__ = (
        CheckConstraint(sql_in("status", MailStatus), name="ck_mail_status"),
        Index(
            "ix_mail_due",
            "next_attempt_at",
            postgresql_where=text(f"status = '{MailStatus.PENDING}'"),
            sqlite_where=text(f"status = '{MailStatus.PENDING}'"),
        ),
        # Retention: sent mails by when they went out, failed ones by when they were written.
        Index(
            "ix_mail_sent",
            "sent_at",
            postgresql_where=text(f"status = '{MailStatus.SENT}'"),
            sqlite_where=text(f"status = '{MailStatus.SENT}'"),
        ),
        Index(
            "ix_mail_failed",
            "created_at",
            postgresql_where=text(f"status = '{MailStatus.FAILED}'"),
            sqlite_where=text(f"status = '{MailStatus.FAILED}'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    account_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(64))
    recipients: Mapped[list[str]] = mapped_column(JsonType)
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    # Files built when the mail is sent, not stored: [{"renderer", "ref", "filename"}]; a
    # renderer is installed by worker/wiring.py (invoices: the invoice PDF).
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    transport: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
