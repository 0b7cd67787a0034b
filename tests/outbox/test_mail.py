"""The mail sender against a real SMTP server in-process (aiosmtpd) and real PostgreSQL.

Time is passed in (`now` / `as_of`), never slept through: a retry "an hour later" is a
run with `now + 1h`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from config import Settings, get_settings, reset_settings
from tests.smtp_server import (
    HOST,
    Credentials,
    Recorder,
    free_port,
    running,
    self_signed_cert,
    server_tls_context,
    silent_listener,
)
from worker.accounts import service as accounts
from worker.db.base import new_id
from worker.db.session import unit_of_work
from worker.outbox import mail as mail_service
from worker.outbox.models import Event, Mail

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PAN = "4111 1111 1111 1111"  # Luhn-valid test card number
MAIL_ENV = [
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_STARTTLS",
    "SMTP_TIMEOUT_SECONDS",
    "MAIL_FROM",
    "MAIL_MAX_ATTEMPTS",
    "MAIL_RETRY_BASE_SECONDS",
    "MAIL_RETRY_MAX_SECONDS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
]

Configure = Callable[..., Settings]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """Set mail settings through the environment, as an operator would."""
    with monkeypatch.context() as patch:

        def apply(**env: object) -> Settings:
            for name in MAIL_ENV:
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, str(value))
            reset_settings()
            return get_settings()

        yield apply
    reset_settings()


def queue_one(
    key: str = "notice-1",
    *,
    recipients: Sequence[str] | None = ("alice@example.com",),
    subject: str = "Your balance is low",
    text: str = "Your balance is 4.20 EUR.",
    html: str | None = "<p>Your balance is <b>4.20 EUR</b>.</p>",
    account_id: str | None = None,
    now: datetime = NOW,
) -> str | None:
    with unit_of_work() as uow:
        mail = mail_service.queue(
            uow,
            dedupe_key=key,
            kind="test.notice",
            recipients=recipients,
            subject=subject,
            text_body=text,
            html_body=html,
            account_id=account_id,
            now=now,
        )
        return mail.id if mail is not None else None


def send(now: datetime = NOW) -> dict[str, Any]:
    settings = get_settings()
    with unit_of_work() as uow:
        return mail_service.send_pending(uow, mail_service.transport_for(settings), settings, now)


def row(mail_id: str | None) -> Mail:
    assert mail_id is not None
    with unit_of_work() as uow:
        found = uow.session.get(Mail, mail_id)
        assert found is not None
        return found


def mail_count() -> int:
    with unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(Mail)) or 0)


def failed_events() -> list[Event]:
    with unit_of_work() as uow:
        return list(uow.session.scalars(select(Event).where(Event.type == "mail.failed")))


def smtp_env(port: int, **extra: object) -> dict[str, object]:
    return {"SMTP_HOST": HOST, "SMTP_PORT": port, "SMTP_TIMEOUT_SECONDS": 5, **extra}


# --- 1. sent once, with the right envelope and content ---------------------------------------


def test_queued_mail_is_sent_once_with_headers_and_both_parts(configure: Configure) -> None:
    from worker.celery import app

    app.loader.import_default_modules()
    task = app.tasks["balance.mail.send_pending"]
    server = Recorder()
    with running(server) as port:
        configure(**smtp_env(port), MAIL_FROM="Billing <billing@example.net>")
        mail_id = queue_one(recipients=["alice@example.com", "bob@example.org"])

        assert send() == {"sent": 1, "retried": 0, "failed": 0}
        assert send(NOW + timedelta(hours=1)) == {"sent": 0, "retried": 0, "failed": 0}
        later = (NOW + timedelta(days=1)).isoformat()
        assert task(as_of=later) == {"sent": 0, "retried": 0, "failed": 0}
        assert len(server.received) == 1

        # The task is a working sender, not a no-op: it sends what is due, once.
        second = queue_one("notice-2", now=NOW + timedelta(hours=2))
        assert task(as_of=later)["sent"] == 1
        assert task(as_of=later)["sent"] == 0

    assert server.message_ids() == [
        f"<{mail_id}@example.net>",
        f"<{second}@example.net>",
    ]
    got = server.received[0]
    assert got.mail_from == "billing@example.net"
    assert got.rcpt_tos == ["alice@example.com", "bob@example.org"]
    message = got.message
    assert str(message["From"]) == "Billing <billing@example.net>"
    assert str(message["To"]) == "alice@example.com, bob@example.org"
    assert str(message["Subject"]) == "Your balance is low"
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == "Your balance is 4.20 EUR."
    assert html.get_content().strip() == "<p>Your balance is <b>4.20 EUR</b>.</p>"

    stored = row(mail_id)
    assert (stored.status, stored.transport, stored.attempts) == ("sent", "smtp", 1)
    assert stored.sent_at == NOW
    assert stored.last_error is None


def test_recipients_default_to_the_accounts_invoice_and_alert_addresses(
    configure: Configure,
) -> None:
    server = Recorder()
    with running(server) as port:
        configure(**smtp_env(port))
        with unit_of_work() as uow:
            account = accounts.create(
                uow, name="Acme", emails=["billing@acme.example", "cfo@acme.example"], now=NOW
            )
        mail_id = queue_one(recipients=None, account_id=account["id"])
        assert send()["sent"] == 1
    assert row(mail_id).recipients == ["billing@acme.example", "cfo@acme.example"]
    assert server.received[0].rcpt_tos == ["billing@acme.example", "cfo@acme.example"]


def test_nothing_is_queued_without_a_valid_recipient() -> None:
    assert queue_one(recipients=[]) is None
    assert queue_one("k2", recipients=["not an address"]) is None
    assert queue_one("k3", recipients=None, account_id="acc_unknown") is None
    assert mail_count() == 0


# --- 2. once per dedupe key; nothing from a rolled-back transaction --------------------------


def test_same_dedupe_key_gives_one_row_and_one_email_and_rollback_sends_nothing(
    configure: Configure,
) -> None:
    first = queue_one("alert:acc_1:crossing-7")
    again = queue_one("alert:acc_1:crossing-7", subject="a different subject")
    assert again == first
    assert row(first).subject == "Your balance is low"  # the first one stands

    dispatched: list[str] = []
    for _ in range(2):  # the send task is triggered after COMMIT, and only for a new mail
        before = list(dispatched)
        with unit_of_work(dispatch=lambda name, args, kwargs: dispatched.append(name)) as uow:
            mail_service.queue(
                uow,
                dedupe_key="wake-up",
                kind="test.notice",
                recipients=["alice@example.com"],
                subject="Wake up",
                text_body="t",
                now=NOW,
            )
            assert dispatched == before
    assert dispatched == ["balance.mail.send_pending"]
    with unit_of_work() as uow:  # twice in one transaction, too
        a = mail_service.queue(
            uow,
            dedupe_key="same-txn",
            kind="test.notice",
            recipients=["alice@example.com"],
            subject="s",
            text_body="t",
            now=NOW,
        )
        b = mail_service.queue(
            uow,
            dedupe_key="same-txn",
            kind="test.notice",
            recipients=["alice@example.com"],
            subject="s",
            text_body="t",
            now=NOW,
        )
        assert a is not None and b is not None and a.id == b.id

    class FactFailed(Exception):
        pass

    with pytest.raises(FactFailed), unit_of_work() as uow:
        mail_service.queue(
            uow,
            dedupe_key="rolled-back",
            kind="test.notice",
            recipients=["alice@example.com"],
            subject="never",
            text_body="never",
            now=NOW,
        )
        raise FactFailed

    assert mail_count() == 3
    server = Recorder()
    with running(server) as port:
        configure(**smtp_env(port))
        assert send()["sent"] == 3
        assert send(NOW + timedelta(days=1))["sent"] == 0
    assert sorted(str(r.message["Subject"]) for r in server.received) == [
        "Wake up",
        "Your balance is low",
        "s",
    ]


def test_two_transactions_racing_on_one_dedupe_key_both_commit_one_mail() -> None:
    """The second INSERT waits for the first transaction and then folds into its row
    (ON CONFLICT DO NOTHING), instead of failing the second transaction's fact."""
    first_queued, second_started = threading.Event(), threading.Event()
    ids: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with unit_of_work() as uow:
                mail = mail_service.queue(
                    uow,
                    dedupe_key="race",
                    kind="test.notice",
                    recipients=["alice@example.com"],
                    subject="s",
                    text_body="t",
                    now=NOW,
                )
                ids["first"] = mail.id if mail else None
                first_queued.set()
                second_started.wait(5)
                time.sleep(0.3)  # the second is now blocked on our uncommitted row
        except BaseException as exc:
            errors.append(exc)

    def second() -> None:
        try:
            first_queued.wait(5)
            second_started.set()
            with unit_of_work() as uow:
                mail = mail_service.queue(
                    uow,
                    dedupe_key="race",
                    kind="test.notice",
                    recipients=["alice@example.com"],
                    subject="s",
                    text_body="t",
                    now=NOW,
                )
                ids["second"] = mail.id if mail else None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert ids["first"] is not None and ids["second"] == ids["first"]
    assert mail_count() == 1


# --- 3. SMTP down: retried with backoff, then delivered exactly once -------------------------


def test_smtp_down_backs_off_then_delivers_exactly_once(configure: Configure) -> None:
    port = free_port()  # nothing listens here yet
    configure(**smtp_env(port), MAIL_RETRY_BASE_SECONDS=60, MAIL_RETRY_MAX_SECONDS=3600)
    mail_id = queue_one()
    other_id = queue_one("notice-2", now=NOW + timedelta(seconds=1))

    assert send(NOW + timedelta(seconds=1)) == {"sent": 0, "retried": 1, "failed": 0}
    stored = row(mail_id)
    assert stored.status == "pending"
    assert stored.attempts == 1
    assert stored.last_error is not None and "ConnectionRefusedError" in stored.last_error
    assert stored.next_attempt_at == NOW + timedelta(seconds=61)
    # The server being down stops the run: the next mail was not tried (nor counted).
    assert row(other_id).attempts == 0

    server = Recorder()
    with running(server, port=port):
        assert send(NOW + timedelta(seconds=2))["sent"] == 1  # the other one, never tried
        assert send(NOW + timedelta(seconds=60))["sent"] == 0  # too early for the first
        assert row(mail_id).attempts == 1
        assert send(NOW + timedelta(seconds=61)) == {"sent": 1, "retried": 0, "failed": 0}
        assert send(NOW + timedelta(hours=5))["sent"] == 0
    assert sorted(server.message_ids()) == sorted(
        [f"<{mail_id}@balance-worker.invalid>", f"<{other_id}@balance-worker.invalid>"]
    )
    stored = row(mail_id)
    assert (stored.status, stored.attempts, stored.last_error) == ("sent", 2, None)
    assert stored.sent_at == NOW + timedelta(seconds=61)


def test_backoff_doubles_and_is_capped(configure: Configure) -> None:
    settings = configure(
        **smtp_env(free_port()),
        MAIL_RETRY_BASE_SECONDS=10,
        MAIL_RETRY_MAX_SECONDS=50,
        MAIL_MAX_ATTEMPTS=10,
    )
    mail_id = queue_one()
    moment, gaps = NOW, []
    for _ in range(5):
        assert send(moment)["retried"] == 1
        due = row(mail_id).next_attempt_at
        gaps.append(int((due - moment).total_seconds()))
        assert send(due - timedelta(seconds=1))["retried"] == 0  # not before it is due
        moment = due
    assert gaps == [10, 20, 40, 50, 50]
    assert row(mail_id).attempts == 5
    assert mail_service.backoff(100, settings) == timedelta(seconds=50)  # no overflow


# --- 4. given up after MAIL_MAX_ATTEMPTS ------------------------------------------------------


def test_after_max_attempts_the_mail_fails_with_an_event(configure: Configure) -> None:
    configure(**smtp_env(free_port()), MAIL_MAX_ATTEMPTS=3, MAIL_RETRY_BASE_SECONDS=60)
    mail_id = queue_one(account_id="acc_123")
    results = []
    moment = NOW
    for _ in range(3):
        results.append(send(moment))
        moment = row(mail_id).next_attempt_at
    assert [r["retried"] for r in results] == [1, 1, 0]
    assert results[-1]["failed"] == 1
    stored = row(mail_id)
    assert (stored.status, stored.attempts) == ("failed", 3)
    assert send(NOW + timedelta(days=30)) == {"sent": 0, "retried": 0, "failed": 0}
    assert row(mail_id).attempts == 3

    (event,) = failed_events()
    assert event.account_id == "acc_123"
    assert event.data["mail_id"] == mail_id
    assert event.data["attempts"] == 3
    assert event.data["permanent"] is False
    assert "ConnectionRefusedError" in event.data["error"]


# --- 5. two senders at once: each mail exactly once ------------------------------------------


def test_concurrent_senders_deliver_each_mail_exactly_once(configure: Configure) -> None:
    server = Recorder(delay=0.4)
    with running(server) as port:
        configure(**smtp_env(port))
        ids = [queue_one(f"notice-{n}") for n in range(6)]
        barrier = threading.Barrier(2)
        results: list[dict[str, Any]] = []
        errors: list[BaseException] = []

        def sender() -> None:
            try:
                barrier.wait(5)
                results.append(send())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sender) for _ in range(2)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - started

    assert errors == []
    assert sorted(server.message_ids()) == sorted(f"<{i}@balance-worker.invalid>" for i in ids)
    assert sum(r["sent"] for r in results) == 6
    # Both worked in parallel (SKIP LOCKED), rather than one waiting on the other's lock.
    assert all(r["sent"] >= 1 for r in results), results
    assert elapsed < 6 * 0.4
    assert all(row(i).attempts == 1 for i in ids)


# --- 6. login and STARTTLS --------------------------------------------------------------------


def test_smtp_auth_login_is_checked_by_the_server(configure: Configure) -> None:
    credentials = Credentials("mailer", "right-horse-battery")
    server = Recorder()
    with running(server, authenticator=credentials, auth_require_tls=False) as port:
        configure(**smtp_env(port), SMTP_USERNAME="mailer", SMTP_PASSWORD="wrong-staple")
        refused_id = queue_one("refused")
        assert send()["retried"] == 1
        error = row(refused_id).last_error
        assert error is not None and "login" in error and "535" in error
        assert server.received == []

        configure(**smtp_env(port), SMTP_USERNAME="mailer", SMTP_PASSWORD="right-horse-battery")
        assert send(NOW + timedelta(hours=1))["sent"] == 1
    # Checked server-side: refused for the wrong password, accepted for the right one.
    assert credentials.attempts[-1] == (b"mailer", True)
    assert len(credentials.attempts) >= 2
    assert all(not ok for _, ok in credentials.attempts[:-1])
    assert [r.authenticated for r in server.received] == [True]
    assert row(refused_id).status == "sent"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    made = self_signed_cert(tmp_path)
    if made is None:
        pytest.skip("cannot make a TLS certificate: neither `cryptography` nor `openssl` found")
    return made


def test_starttls_upgrades_before_login_and_verifies_the_certificate(
    configure: Configure, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    credentials = Credentials("mailer", "tls-only-secret")
    server = Recorder()
    with running(
        server,
        tls_context=server_tls_context(cert, key),
        require_starttls=True,
        authenticator=credentials,  # auth_require_tls stays True: AUTH only after TLS
    ) as port:
        login = {"SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "tls-only-secret"}
        # Without STARTTLS this server offers no AUTH (nor accepts mail): the mail waits.
        configure(**smtp_env(port), **login)
        plain_id = queue_one("in-clear")
        assert send()["retried"] == 1
        assert "login" in (row(plain_id).last_error or "")

        # STARTTLS against a certificate nobody trusts: refused by us, nothing sent.
        configure(**smtp_env(port), **login, SMTP_STARTTLS="true")
        assert send(NOW + timedelta(minutes=1))["retried"] == 1
        assert "CERTIFICATE_VERIFY_FAILED" in (row(plain_id).last_error or "")
        assert server.received == []

        # Trusted (as an operator would via SSL_CERT_FILE): upgraded, logged in, delivered.
        configure(**smtp_env(port), **login, SMTP_STARTTLS="true", SSL_CERT_FILE=cert)
        assert send(NOW + timedelta(hours=1))["sent"] == 1
    (got,) = server.received
    assert got.tls is True
    assert got.authenticated is True
    assert str(got.message["Message-ID"]) == f"<{plain_id}@balance-worker.invalid>"


# --- 7. no SMTP_HOST: the log is the mailbox --------------------------------------------------


def test_without_smtp_host_the_mail_is_written_to_the_log(
    configure: Configure, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    configure(BALANCE_HOME=tmp_path)
    assert get_settings().smtp_host is None
    mail_id = queue_one(subject="Balance reloaded", text="We charged 20.00 EUR to your card.")
    with caplog.at_level(logging.INFO, logger="worker.outbox.mail"):
        assert send() == {"sent": 1, "retried": 0, "failed": 0}
        assert send(NOW + timedelta(days=1))["sent"] == 0
    logged = [r.getMessage() for r in caplog.records if "We charged 20.00 EUR" in r.getMessage()]
    assert len(logged) == 1
    assert "Balance reloaded" in logged[0] and "alice@example.com" in logged[0]
    stored = row(mail_id)
    assert (stored.status, stored.transport, stored.sent_at) == ("sent", "log", NOW)
    # ... and kept as a file in BALANCE_HOME/mail/, readable after a one-off CLI run.
    [eml] = (get_settings().balance_home.resolve() / "mail").glob(f"{mail_id}.eml")
    assert "We charged 20.00 EUR" in eml.read_text()


# --- 8. the SMTP password never leaks ---------------------------------------------------------


def test_smtp_password_never_reaches_logs_errors_or_events(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    password = "Pa55-w0rd-do-not-leak"
    # A careless server that repeats the attempted password in its 535 reply.
    credentials = Credentials("mailer", "the-real-one", echo=True)
    with running(Recorder(), authenticator=credentials, auth_require_tls=False) as port:
        configure(
            **smtp_env(port),
            SMTP_USERNAME="mailer",
            SMTP_PASSWORD=password,
            MAIL_MAX_ATTEMPTS=2,
        )
        mail_id = queue_one(account_id="acc_1")
        with caplog.at_level(logging.DEBUG):
            assert send()["retried"] == 1
            assert send(NOW + timedelta(days=1))["failed"] == 1
    stored = row(mail_id)
    assert stored.status == "failed"
    assert stored.last_error is not None and "[REDACTED]" in stored.last_error
    (event,) = failed_events()
    forms = [password, base64.b64encode(password.encode()).decode()]
    # aiosmtpd's own debug log ("mail.log") is the server's, which sees the AUTH exchange.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    assert any("login" in m for m in ours)  # the failure was logged...
    for text in [*ours, stored.last_error, str(event.data)]:
        for form in forms:
            assert form not in text  # ...without the password


# --- 9. no card numbers stored ----------------------------------------------------------------


def test_card_numbers_in_subject_and_body_are_stored_and_sent_redacted(
    configure: Configure,
) -> None:
    mail_id = queue_one(
        subject=f"Card {PAN.replace(' ', chr(10), 1)} declined",  # split over two lines, too
        text=f"We could not charge card {PAN}.",
        html=f"<p>card {PAN.replace(' ', '-')}</p>",
    )
    stored = row(mail_id)
    assert stored.subject == "Card [REDACTED] declined"
    assert stored.text_body == "We could not charge card [REDACTED]."
    assert stored.html_body == "<p>card [REDACTED]</p>"

    server = Recorder()
    with running(server) as port:
        configure(**smtp_env(port))
        assert send()["sent"] == 1
    message = server.received[0].message
    # What the message says: headers and every decoded part (the MIME boundary is random
    # digits and may contain "4111" by chance, so the raw text is not the thing to search).
    said = "\n".join(
        [f"{k}: {v}" for k, v in message.items()]
        + [
            part.get_payload(decode=True).decode()
            for part in message.walk()
            if not part.is_multipart()
        ]
    )
    assert "[REDACTED]" in said
    assert "4111" not in said
    assert "4111" not in said.replace(" ", "").replace("-", "").replace("\n", "")


# --- how the server's answers are read --------------------------------------------------------


def test_a_permanent_rejection_fails_at_once_and_the_run_goes_on(configure: Configure) -> None:
    server = Recorder(refuse_rcpt={"gone@example.com": "550 5.1.1 no such user"})
    with running(server) as port:
        configure(**smtp_env(port), MAIL_MAX_ATTEMPTS=8)
        rejected = queue_one("rejected", recipients=["gone@example.com"])
        fine = queue_one("fine", now=NOW + timedelta(seconds=1))
        assert send(NOW + timedelta(seconds=1)) == {"sent": 1, "retried": 0, "failed": 1}
    stored = row(rejected)
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert stored.last_error is not None and "550" in stored.last_error
    (event,) = failed_events()
    assert event.data["mail_id"] == rejected and event.data["permanent"] is True
    assert row(fine).status == "sent"


def test_a_temporary_rejection_is_retried_and_the_run_goes_on(configure: Configure) -> None:
    server = Recorder(data_reply="451 4.3.0 try again later")
    with running(server) as port:
        configure(**smtp_env(port), MAIL_RETRY_BASE_SECONDS=300)
        first, second = queue_one("a"), queue_one("b")
        assert send() == {"sent": 0, "retried": 2, "failed": 0}  # both tried: not a dead server
        assert "451" in (row(first).last_error or "")
        server.data_reply = None
        assert send(NOW + timedelta(seconds=299))["sent"] == 0
        assert send(NOW + timedelta(seconds=300))["sent"] == 2
    assert len(server.received) == 2
    assert row(second).attempts == 2


def test_a_partly_refused_mail_is_sent_and_notes_who_was_refused(configure: Configure) -> None:
    server = Recorder(refuse_rcpt={"gone@example.com": "550 5.1.1 no such user"})
    with running(server) as port:
        configure(**smtp_env(port))
        mail_id = queue_one(recipients=["alice@example.com", "gone@example.com"])
        assert send()["sent"] == 1
        assert send(NOW + timedelta(days=1))["sent"] == 0
    assert server.received[0].rcpt_tos == ["alice@example.com"]
    stored = row(mail_id)
    assert stored.status == "sent"
    assert stored.last_error is not None and "gone@example.com 550" in stored.last_error


def test_a_failing_quit_after_accepted_data_does_not_send_again(configure: Configure) -> None:
    server = Recorder(quit_reply="421 4.3.2 shutting down")
    with running(server) as port:
        configure(**smtp_env(port))
        mail_id = queue_one()
        assert send()["sent"] == 1
        assert send(NOW + timedelta(days=1))["sent"] == 0
    assert len(server.received) == 1
    assert row(mail_id).status == "sent"


def test_a_hung_server_is_cut_off_by_the_timeout(configure: Configure) -> None:
    with silent_listener() as port:
        configure(**smtp_env(port, SMTP_TIMEOUT_SECONDS=0.3))
        mail_id = queue_one()
        started = time.monotonic()
        assert send()["retried"] == 1
        elapsed = time.monotonic() - started
    assert elapsed < 2
    stored = row(mail_id)
    assert stored.status == "pending"
    assert stored.last_error is not None and "timed out" in stored.last_error


def test_a_row_that_cannot_become_a_message_fails_without_blocking_the_others(
    configure: Configure,
) -> None:
    with unit_of_work() as uow:  # written behind queue()'s back: a header with a line break
        uow.session.add(
            Mail(
                id=new_id("mail"),
                dedupe_key="broken",
                kind="test.notice",
                recipients=["alice@example.com"],
                subject="two\nlines",
                text_body="t",
                status="pending",
                attempts=0,
                next_attempt_at=NOW - timedelta(minutes=1),
                created_at=NOW,
            )
        )
    fine = queue_one("fine")
    server = Recorder()
    with running(server) as port:
        configure(**smtp_env(port))
        assert send() == {"sent": 1, "retried": 0, "failed": 1}
    with unit_of_work() as uow:
        broken = uow.session.scalars(select(Mail).where(Mail.dedupe_key == "broken")).one()
    assert broken.status == "failed"
    assert broken.last_error is not None and broken.last_error.startswith("cannot build message")
    assert row(fine).status == "sent"
