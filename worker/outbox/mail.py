"""The one mail sender: an outbox written with the fact it reports, sent over SMTP.

`queue()` adds a row to `mail_outbox` in the caller's transaction (once per dedupe key,
also when two transactions race: INSERT ... ON CONFLICT DO NOTHING), so a mail exists
exactly when the fact it reports was committed. `send_pending()` claims due rows one at a
time with a row lock (FOR UPDATE SKIP LOCKED), sends, and marks the row before that
transaction commits, so two senders never send the same row.

Failures are sorted by what they mean:

- the server failed (unreachable, timeout, TLS, login, sender refused, link dropped): the
  attempt counts and backs off, and the run stops: the next mails would fail the same way;
- the server refused this message for good (5xx to every recipient or to the data): the
  mail is `failed` at once, with a `mail.failed` event, and the run goes on;
- the server refused this message for now (4xx), or anything unexpected: back off and go on.

Backoff is exponential (MAIL_RETRY_BASE_SECONDS doubling, capped at
MAIL_RETRY_MAX_SECONDS); after MAIL_MAX_ATTEMPTS the mail is `failed` with a `mail.failed`
event. The Message-ID is derived from the row id, so the one unavoidable duplicate (a
crash after the SMTP server accepted, before our commit) carries the same Message-ID for
the receiving side to fold. Error texts and logs never carry SMTP_PASSWORD or a card number.

Longer than 400 lines on purpose: the outbox and its one sender share the row's life cycle
(queue, claim, send, retry, fail), which reads best in one place.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Protocol, cast

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Table, column, select, table
from sqlalchemy.dialects import postgresql, sqlite

from config import Settings
from worker.db.base import JsonType, new_id
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.kernel.redaction import REDACTED, redact
from worker.outbox import events
from worker.outbox.models import Mail

log = logging.getLogger(__name__)

SEND_TASK = task_names.MAIL_SEND_PENDING
SUBJECT_MAX = 300  # mail_outbox.subject
DEDUPE_KEY_MAX = 200  # mail_outbox.dedupe_key
KIND_MAX = 64  # mail_outbox.kind
ERROR_MAX = 500


class MailServerError(Exception):
    """The server, not this message, failed: retry later and stop this run."""


class MessageRejected(Exception):
    """The server refused this message; `permanent` for a 5xx (never retried)."""

    def __init__(self, detail: str, *, permanent: bool) -> None:
        super().__init__(detail)
        self.permanent = permanent


class MailTransport(Protocol):
    name: str

    def send(self, message: EmailMessage) -> Mapping[str, str] | None:
        """Deliver `message`; return the recipients refused while others were accepted."""
        ...


def _clean(text: str, secrets: Sequence[str] = ()) -> str:
    """One line, without secrets or card numbers, bounded: fit for a log or last_error."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return (redact(" ".join(text.split())) or "")[:ERROR_MAX]


def _describe(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    return _clean(f"{type(exc).__name__}: {exc}", secrets)


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"


class SmtpTransport:
    """SMTP with optional STARTTLS (certificate verified) and login; a timeout on every
    socket operation (connect, each command and reply)."""

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ValueError("SMTP_HOST: not set (use LogTransport)")
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.starttls = settings.smtp_starttls
        self.username = settings.smtp_username
        self._password = settings.smtp_password
        self.timeout = settings.smtp_timeout_seconds

    def _secrets(self) -> list[str]:
        return [self._password.get_secret_value()] if self._password is not None else []

    def _server_error(self, stage: str, exc: BaseException) -> MailServerError:
        return MailServerError(f"{stage}: {_describe(exc, self._secrets())}")

    def send(self, message: EmailMessage) -> dict[str, str]:
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except Exception as exc:  # refused, unresolvable, timeout, bad banner
            raise self._server_error("connect", exc) from None
        try:
            self._open(smtp)
            refused = self._deliver(smtp, message)
        finally:
            self._close(smtp)
        return {address: _reply(code, text) for address, (code, text) in refused.items()}

    def _open(self, smtp: smtplib.SMTP) -> None:
        stage = "ehlo"
        try:
            smtp.ehlo()
            if self.starttls:
                stage = "starttls"
                # Raises SMTPNotSupportedError when the server offers no STARTTLS: a mail
                # is never sent in clear when TLS was asked for.
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                stage = "login"
                password = self._password.get_secret_value() if self._password else ""
                smtp.login(self.username, password)
        except Exception as exc:
            raise self._server_error(stage, exc) from None

    def _deliver(self, smtp: smtplib.SMTP, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        try:
            return smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            detail = "recipients refused: " + "; ".join(
                f"{address} {_reply(code, text)}"
                for address, (code, text) in exc.recipients.items()
            )
            if 421 in codes:  # the server is closing the session
                raise MailServerError(_clean(detail)) from None
            raise MessageRejected(
                _clean(detail), permanent=all(code >= 500 for code in codes)
            ) from None
        except smtplib.SMTPSenderRefused as exc:
            detail = _clean(f"sender refused: {_reply(exc.smtp_code, exc.smtp_error)}")
            if exc.smtp_code == 552:  # message size exceeds the server's limit
                raise MessageRejected(detail, permanent=True) from None
            # MAIL_FROM is the same for every mail: a configuration or server problem.
            raise MailServerError(detail) from None
        except smtplib.SMTPDataError as exc:
            detail = _clean(f"data refused: {_reply(exc.smtp_code, exc.smtp_error)}")
            if exc.smtp_code == 421:
                raise MailServerError(detail) from None
            raise MessageRejected(detail, permanent=exc.smtp_code >= 500) from None
        except smtplib.SMTPNotSupportedError as exc:  # e.g. needs SMTPUTF8, not offered
            raise MessageRejected(_describe(exc), permanent=True) from None
        except Exception as exc:  # dropped link, timeout, protocol error
            raise self._server_error("send", exc) from None

    @staticmethod
    def _close(smtp: smtplib.SMTP) -> None:
        """QUIT, ignoring its outcome: once DATA was accepted the mail is sent, and a
        failing QUIT must not make us send it again."""
        try:
            smtp.quit()
        except Exception:
            smtp.close()


class LogTransport:
    """No SMTP_HOST configured: the mail is written to the log and, when a folder is given,
    as an .eml file there (`BALANCE_HOME/mail/`), so it can be read after a one-off
    `balancectl jobs run mail` whose log nobody sees."""

    name = "log"

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder

    def send(self, message: EmailMessage) -> dict[str, str]:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        where = ""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]", "", str(message["Message-ID"]).split("@")[0])
            path = self.folder / f"{name or 'mail'}.eml"
            path.write_bytes(message.as_bytes())
            where = f" file={path}"
        log.info(
            "mail (no SMTP_HOST) message-id=%s to=%s subject=%r%s\n%s",
            message["Message-ID"],
            message["To"],
            message["Subject"],
            where,
            text,
        )
        return {}


def transport_for(settings: Settings) -> MailTransport:
    if settings.smtp_host:
        return SmtpTransport(settings)
    return LogTransport(settings.balance_home.resolve() / "mail")


# --- the outbox -----------------------------------------------------------------------------


def _normalize_recipients(recipients: Sequence[str], kind: str) -> list[str]:
    result: list[str] = []
    for raw in recipients:
        try:
            address = validate_email(str(raw).strip(), check_deliverability=False).normalized
        except EmailNotValidError:
            log.warning("mail %s: skipping an invalid recipient address", kind)
            continue
        if address.lower() not in (known.lower() for known in result):
            result.append(address)
    return result


def _clean_subject(subject: str) -> str:
    """One line (a header cannot hold a line break), no card number, fits the column.
    Whitespace is folded before redaction so a number split across lines is still found."""
    line = redact(" ".join(subject.split())) or ""
    return line if len(line) <= SUBJECT_MAX else line[: SUBJECT_MAX - 1] + "…"


# The outbox sits below the ledger's models (it imports no domain), so the default
# recipients are read from the accounts table by name: one column, one row.
_ACCOUNT_EMAILS = table("accounts", column("id"), column("emails", JsonType))


def account_recipients(uow: UnitOfWork, account_id: str) -> list[str]:
    """The account's invoice-and-alert addresses (empty when the account is unknown)."""
    emails = uow.session.scalar(
        select(_ACCOUNT_EMAILS.c.emails).where(_ACCOUNT_EMAILS.c.id == account_id)
    )
    return list(emails) if emails else []


def queue(
    uow: UnitOfWork,
    *,
    dedupe_key: str,
    kind: str,
    subject: str,
    text_body: str,
    html_body: str | None = None,
    recipients: Sequence[str] | None = None,
    account_id: str | None = None,
    attachments: Sequence[Mapping[str, str]] | None = None,
    now: datetime,
) -> Mail | None:
    """Add a mail to the outbox of the current transaction, once per `dedupe_key`.

    `recipients` default to the account's invoice-and-alert addresses. Returns the mail
    (the earlier one for a known `dedupe_key`), or None when there is nobody to send to.
    The mail is sent after COMMIT; if the transaction rolls back, it never existed.
    `attachments`: `{renderer, ref, filename}` each, built when the mail is sent by the
    renderer installed under that name (`install_attachment_renderer`).
    """
    if recipients is None:
        recipients = account_recipients(uow, account_id) if account_id else []
    values = _row(
        dedupe_key=dedupe_key,
        kind=kind,
        subject=subject,
        text_body=text_body,
        html_body=html_body,
        recipients=recipients,
        account_id=account_id,
        attachments=attachments,
        now=now,
    )
    if values is None:
        return None
    # A second queue() for the same key, even from a racing transaction, folds into the
    # first row instead of failing the caller's transaction (and the fact it reports).
    dialect = uow.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inserted = uow.session.execute(
        insert(Mail)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Mail.dedupe_key])
        .returning(Mail.id)
    ).scalar_one_or_none()
    mail = uow.session.scalars(select(Mail).where(Mail.dedupe_key == dedupe_key)).one()
    if inserted is not None:
        uow.enqueue(SEND_TASK)
    return mail


def queue_many(uow: UnitOfWork, mails: Sequence[Mapping[str, Any]]) -> int:
    """`queue` for many mails at once (the keyword arguments of `queue` each, `recipients`
    given): INSERT ... ON CONFLICT (dedupe_key) DO NOTHING, compiled once and sent in pages
    of rows. Returns how many were new. Raises ValueError as `queue` does, before anything
    is written."""
    rows = [row for row in (_row(**dict(m)) for m in mails) if row is not None]
    if not rows:
        return 0
    dialect = uow.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    outbox = cast(Table, Mail.__table__)
    statement = (
        insert(outbox)
        .on_conflict_do_nothing(index_elements=[outbox.c.dedupe_key])
        .returning(outbox.c.id)
    )
    count = len(uow.session.connection().execute(statement, rows).all())
    if count:
        uow.enqueue(SEND_TASK)
    return count


def _row(
    *,
    dedupe_key: str,
    kind: str,
    subject: str,
    text_body: str,
    html_body: str | None = None,
    recipients: Sequence[str],
    account_id: str | None = None,
    attachments: Sequence[Mapping[str, str]] | None = None,
    now: datetime,
) -> dict[str, Any] | None:
    """The outbox row of one mail (None: nobody to send to); ValueError for a bad key/kind."""
    if not dedupe_key or len(dedupe_key) > DEDUPE_KEY_MAX:
        raise ValueError(f"dedupe_key: must be 1-{DEDUPE_KEY_MAX} characters")
    if not kind or len(kind) > KIND_MAX:
        raise ValueError(f"kind: must be 1-{KIND_MAX} characters")
    addresses = _normalize_recipients(recipients, kind)
    if not addresses:
        log.warning(
            "mail %s for account %s not queued: no invoice-and-alert address", kind, account_id
        )
        return None
    return {
        "id": new_id("mail"),
        "dedupe_key": dedupe_key,
        "account_id": account_id,
        "kind": kind,
        "recipients": addresses,
        "subject": _clean_subject(subject),
        "text_body": redact(text_body) or "",
        "html_body": redact(html_body),
        "attachments": [dict(item) for item in attachments] if attachments else None,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _message_id(mail_id: str, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2]
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", domain):
        domain = "balance-worker"
    return f"<{mail_id}@{domain}>"


# --- attachments: built when sent, by a renderer a domain above installs ---------------------


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # e.g. application/pdf
    data: bytes


class AttachmentRenderer(Protocol):
    def __call__(self, uow: UnitOfWork, ref: str) -> Attachment: ...


_renderers: dict[str, AttachmentRenderer] = {}


def install_attachment_renderer(name: str, renderer: AttachmentRenderer) -> None:
    """Register how attachments named `name` are built (worker/wiring.py installs them: the
    outbox sits below the domains whose documents it carries)."""
    _renderers[name] = renderer


def _attachments(uow: UnitOfWork, mail: Mail) -> list[Attachment]:
    """The mail's files; raises when a renderer is missing or fails (the attempt counts and
    backs off: a worker started without the wiring must not send a mail without its file)."""
    built: list[Attachment] = []
    for item in mail.attachments or []:
        renderer = _renderers.get(str(item.get("renderer")))
        if renderer is None:
            raise LookupError(f"no attachment renderer {item.get('renderer')!r} installed")
        attachment = renderer(uow, str(item.get("ref")))
        built.append(
            Attachment(
                str(item.get("filename") or attachment.filename),
                attachment.content_type,
                attachment.data,
            )
        )
    return built


def build_message(mail: Mail, sender: str, attachments: Sequence[Attachment] = ()) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(mail.recipients)
    message["Subject"] = mail.subject
    message["Message-ID"] = _message_id(mail.id, sender)
    message["Date"] = format_datetime(mail.created_at)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    message.set_content(mail.text_body)
    if mail.html_body:
        message.add_alternative(mail.html_body, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message


def backoff(attempts: int, settings: Settings) -> timedelta:
    """Delay after the `attempts`-th failure: base, 2 x base, 4 x base, ... capped."""
    exponent = min(max(attempts - 1, 0), 62)
    seconds = min(
        settings.mail_retry_base_seconds * 2**exponent,
        settings.mail_retry_max_seconds,
    )
    return timedelta(seconds=seconds)


def _claim_next(uow: UnitOfWork, now: datetime) -> Mail | None:
    return uow.session.scalars(
        select(Mail)
        .where(Mail.status == "pending", Mail.next_attempt_at <= now)
        .order_by(Mail.next_attempt_at, Mail.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _record_failure(
    uow: UnitOfWork, mail: Mail, error: str, permanent: bool, settings: Settings, now: datetime
) -> bool:
    """Note a failed attempt; True when the mail is now `failed` for good."""
    mail.last_error = error
    if permanent or mail.attempts >= settings.mail_max_attempts:
        mail.status = "failed"
        events.record(
            uow,
            "mail.failed",
            mail.account_id,
            {
                "mail_id": mail.id,
                "kind": mail.kind,
                "attempts": mail.attempts,
                "permanent": permanent,
                "error": error,
            },
            now,
        )
        log.error(
            "mail %s (%s) failed for good after %d attempt(s): %s",
            mail.id,
            mail.kind,
            mail.attempts,
            error,
        )
        return True
    mail.next_attempt_at = now + backoff(mail.attempts, settings)
    log.warning(
        "mail %s (%s) attempt %d failed, next at %s: %s",
        mail.id,
        mail.kind,
        mail.attempts,
        mail.next_attempt_at.isoformat(),
        error,
    )
    return False


@dataclass(frozen=True)
class _Attempt:
    refused: Mapping[str, str] | None = None  # None: not delivered
    error: str = ""
    permanent: bool = False  # never retry this mail
    stop: bool = False  # the server is the problem: stop this run


def _attempt(
    uow: UnitOfWork,
    mail: Mail,
    transport: MailTransport,
    settings: Settings,
    secrets: Sequence[str],
) -> _Attempt:
    try:
        files = _attachments(uow, mail)
    except Exception as exc:  # a missing renderer or a failing file: retry later
        return _Attempt(error="cannot build attachment: " + _describe(exc))
    try:
        message = build_message(mail, settings.mail_from, files)
    except Exception as exc:  # this row can never become a message: retrying cannot help
        return _Attempt(error="cannot build message: " + _describe(exc), permanent=True)
    try:
        return _Attempt(refused=transport.send(message) or {})
    except MessageRejected as exc:
        return _Attempt(error=_describe(exc, secrets), permanent=exc.permanent)
    except (MailServerError, OSError) as exc:  # OSError: from a transport of another kind
        return _Attempt(error=_describe(exc, secrets), stop=True)
    except Exception as exc:  # unexpected: count the attempt, never block the queue
        return _Attempt(error=_describe(exc, secrets))


def send_pending(
    uow: UnitOfWork, transport: MailTransport, settings: Settings, now: datetime, limit: int = 100
) -> dict[str, Any]:
    """Send mails that are due as of `now`, one transaction (and row lock) per mail."""
    secrets = [settings.smtp_password.get_secret_value()] if settings.smtp_password else []
    sent = retried = failed = 0
    for _ in range(limit):
        mail = _claim_next(uow, now)
        if mail is None:
            break
        mail.attempts += 1
        outcome = _attempt(uow, mail, transport, settings, secrets)
        if outcome.refused is not None:
            mail.status = "sent"
            mail.sent_at = now
            mail.transport = transport.name
            mail.last_error = None
            if outcome.refused:
                mail.last_error = _clean(
                    "sent; refused: " + "; ".join(f"{a} {r}" for a, r in outcome.refused.items()),
                    secrets,
                )
                log.warning("mail %s (%s): %s", mail.id, mail.kind, mail.last_error)
            uow.commit()
            sent += 1
            log.info(
                "mail %s (%s) sent via %s to %d recipient(s)",
                mail.id,
                mail.kind,
                transport.name,
                len(mail.recipients) - len(outcome.refused),
            )
            continue
        if _record_failure(uow, mail, outcome.error, outcome.permanent, settings, now):
            failed += 1
        else:
            retried += 1
        uow.commit()
        if outcome.stop:
            break
    return {"sent": sent, "retried": retried, "failed": failed}
