"""No card data at rest or in logs (DESIGN.md invariant 7, issue 3).

The well-known test card numbers go through every input: where the input is an
identifier (nonce, idempotency key, reference) they are refused without being echoed;
where it is free text (account name, descriptions, reasons, mail) they become
[REDACTED]. Then every column of every table, cast to text, and every captured log
line (in-process at DEBUG, and a real `balancectl` process) is searched for the digits.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from config import get_settings
from worker.accounts import service as accounts
from worker.charges import top_up as top_ups
from worker.db.session import get_engine, unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import DomainError
from worker.kernel.redaction import REDACTED
from worker.ledger import adjustments
from worker.outbox import mail
from worker.payment_methods import service as payment_methods
from worker.usage import service as usage

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

# The standard PSP test numbers (all Luhn-valid), digits only.
PANS = [
    "4111111111111111",  # Visa
    "4242424242424242",  # Visa (Stripe)
    "5555555555554444",  # Mastercard
    "378282246310005",  # American Express (15)
    "6011111111111117",  # Discover
    "3056930009020004",  # Diners Club (16)
    "4000056655665556",  # Visa debit
]


def _grouped(pan: str, sep: str) -> str:
    if len(pan) == 15:  # Amex prints 4-6-5
        return sep.join((pan[:4], pan[4:10], pan[10:]))
    return sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))


# Each number as typed, as printed on the card, and as read out with dashes.
FORMS = [
    *PANS,
    *(_grouped(p, " ") for p in PANS),
    *(_grouped(p, "-") for p in PANS),
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
]


def _squash(haystack: str) -> str:
    return re.sub(r"[\s-]", "", haystack)


def _leaks(haystack: str) -> list[str]:
    """The test card numbers found in `haystack`, ignoring spaces and dashes."""
    squashed = _squash(haystack)
    return [pan for pan in PANS if pan in squashed]


def _balancectl(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("balancectl")
    command = [str(script)] if script.exists() else [shutil.which("balancectl") or "balancectl"]
    return subprocess.run(
        [*command, *args], env=dict(os.environ), capture_output=True, text=True, timeout=60
    )


def _db_text() -> tuple[dict[str, int], str]:
    """Every column of every table cast to text: (non-null values per table, the text)."""
    engine = get_engine()
    inspector = inspect(engine)
    preparer = engine.dialect.identifier_preparer
    seen: dict[str, int] = {}
    chunks: list[str] = []
    with engine.connect() as conn:
        for table in inspector.get_table_names():
            seen[table] = 0
            for column in inspector.get_columns(table):
                col, tab = preparer.quote(column["name"]), preparer.quote(table)
                values = conn.execute(
                    text(f"SELECT CAST({col} AS TEXT) FROM {tab} WHERE {col} IS NOT NULL")
                ).scalars()
                for value in values:
                    seen[table] += 1
                    chunks.append(value)
    return seen, "\n".join(chunks)


def _refused(call: Callable[[], Any], field: str, messages: list[str]) -> None:
    with pytest.raises(DomainError) as info:
        call()
    assert info.value.field == field, (field, str(info.value))
    messages.append(str(info.value))
    messages.append(repr(info.value))


def test_card_numbers_never_reach_the_database_or_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger, everything
    from worker.celery import app

    app.loader.import_default_modules()
    messages: list[str] = []  # what callers were told (CLI stderr, task results, logs)
    stamp = now()

    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="Card test", emails=["ops@example.com"], now=stamp)[
            "id"
        ]
    with unit_of_work() as uow:
        payment_methods.add(
            uow, account_id=account_id, psp="braintree", nonce="fake-valid-visa-nonce", now=stamp
        )
    with unit_of_work() as uow:  # a real charge, so the PSP stub's own table has rows
        paid = top_ups.top_up(uow, account_id=account_id, amount="50.00", idempotency_key="ok-1")
    assert paid["status"] == "succeeded"

    debit_task = app.tasks["balance.usage.debit"]
    adjust_task = app.tasks["balance.ledger.adjust"]
    top_up_task = app.tasks["balance.payments.top_up"]

    for n, card in enumerate(FORMS):
        # Identifiers: refused, never echoed, nothing written.
        for psp, nonce in (
            ("braintree", card),
            ("braintree", f"fake-valid-visa-nonce:{card}"),
            ("paypal", card),
            ("bank_transfer", card),
        ):

            def add(psp: str = psp, nonce: str = nonce) -> Any:
                with unit_of_work() as uow:
                    return payment_methods.add(
                        uow, account_id=account_id, psp=psp, nonce=nonce, now=now()
                    )

            _refused(add, "nonce", messages)

        def top_up(card: str = card) -> Any:
            with unit_of_work() as uow:
                return top_ups.top_up(
                    uow, account_id=account_id, amount="1.00", idempotency_key=card
                )

        _refused(top_up, "idempotency_key", messages)

        def debit_ref(card: str = card) -> Any:
            with unit_of_work() as uow:
                return usage.debit(
                    uow, account_id=account_id, amount="0.01", reference=card, now=now()
                )

        _refused(debit_ref, "reference", messages)

        def adjust_ref(card: str = card) -> Any:
            with unit_of_work() as uow:
                return adjustments.adjust(
                    uow, account_id=account_id, amount="1", reason="x", reference=card, now=now()
                )

        _refused(adjust_ref, "reference", messages)

        # Free text: stored, with the number replaced.
        with unit_of_work() as uow:
            result = usage.debit(
                uow,
                account_id=account_id,
                amount="0.01",
                reference=f"msg-{n}",
                description=f"SMS to customer who read out {card} on the phone",
                now=now(),
            )
        assert result["duplicate"] is False
        with unit_of_work() as uow:
            result = adjustments.adjust(
                uow,
                account_id=account_id,
                amount="0.50",
                reason=f"goodwill: customer pasted {card} into the chat",
                now=now(),
            )
        assert REDACTED in result["reason"]
        with unit_of_work() as uow:
            created = accounts.create(uow, name=f"Acme {card} Ltd", now=now())
        assert REDACTED in created["name"]
        with unit_of_work() as uow:
            queued = mail.queue(
                uow,
                dedupe_key=f"card-test-{n}",
                kind="receipt",
                subject=f"Receipt for card {card}",
                text_body=f"We charged card {card}.\nThanks.",
                html_body=f"<p>We charged card <b>{card}</b>.</p>",
                account_id=account_id,
                now=now(),
            )
        assert queued is not None

        # The Celery tasks (run in-process through Celery's tracer, which logs refusals).
        messages.append(repr(debit_task.apply(args=[account_id, "0.01", card]).result))
        messages.append(
            repr(
                top_up_task.apply(
                    args=[account_id, "1.00"], kwargs={"idempotency_key": card}
                ).result
            )
        )
        debited = debit_task.apply(
            args=[account_id, "0.01", f"task-msg-{n}"], kwargs={"description": f"to {card}"}
        )
        assert debited.successful(), debited.result
        adjusted = adjust_task.apply(args=[account_id, "0.10", f"card {card} again"])
        assert adjusted.successful(), adjusted.result
        messages.append(json.dumps([debited.result, adjusted.result]))

    # The mails go out (LogTransport: written to the log, subject and body included).
    with unit_of_work() as uow:
        sent = mail.send_pending(uow, mail.LogTransport(), get_settings(), now())
    assert sent["sent"] == len(FORMS)

    # A real operator process: refusals and a redacted reason, output captured.
    pan, spaced = PANS[0], _grouped(PANS[0], " ")
    commands = [
        ("methods", "add", account_id, "--psp", "braintree", "--nonce", spaced, "--json"),
        ("usage", "debit", account_id, "0.01", "--reference", pan, "--json"),
        ("adjust", account_id, "1", "--reason", f"refund for {spaced}", "--json"),
        ("adjust", account_id, "1", "--reason", "x", "--reference", pan, "--json"),
        ("top-up", account_id, "1.00", "--idempotency-key", pan, "--json"),
        ("accounts", "create", "--name", f"CLI {pan}", "--json"),
    ]
    with ThreadPoolExecutor(len(commands)) as pool:
        outputs = list(pool.map(lambda c: _balancectl(*c), commands))
    codes = [o.returncode for o in outputs]
    assert codes == [1, 1, 0, 1, 1, 0], [(o.args, o.stdout, o.stderr) for o in outputs]
    assert json.loads(outputs[0].stdout)["error"]["field"] == "nonce"
    assert json.loads(outputs[1].stdout)["error"]["field"] == "reference"
    assert json.loads(outputs[2].stdout)["reason"] == f"refund for {REDACTED}"
    assert json.loads(outputs[3].stdout)["error"]["field"] == "reference"
    assert json.loads(outputs[4].stdout)["error"]["field"] == "idempotency_key"
    assert json.loads(outputs[5].stdout)["name"] == f"CLI {REDACTED}"
    cli_text = "\n".join(o.stdout + "\n" + o.stderr for o in outputs)

    # --- the search --------------------------------------------------------------------------
    seen, db_text = _db_text()
    for table in (
        "accounts",
        "payment_methods",
        "charges",
        "ledger_transactions",
        "events",
        "mail_outbox",
        "psp_stub_remote_charges",
    ):
        assert seen.get(table), f"{table} was not scanned or is empty: {seen}"
    assert _leaks(db_text) == []
    log_text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "raised expected" in log_text  # Celery's tracer did log the refusals
    assert "We charged card" in log_text  # the mails went to the log
    assert _leaks(log_text) == []
    assert _leaks(cli_text) == []
    assert _leaks("\n".join(messages)) == []

    # --- and the free text did land, redacted (the test cannot pass by storing nothing) ----
    with get_engine().connect() as conn:

        def column(sql: str) -> list[str]:
            return [str(v) for v in conn.execute(text(sql)).scalars()]

        names = column("SELECT name FROM accounts WHERE name LIKE 'Acme %'")
        descriptions = column(
            "SELECT description FROM ledger_transactions WHERE kind = 'usage_debit'"
        )
        reasons = column("SELECT description FROM ledger_transactions WHERE kind = 'adjustment'")
        event_reasons = column(
            "SELECT CAST(data AS TEXT) FROM events WHERE type = 'balance.adjusted'"
        )
        subjects = column("SELECT subject FROM mail_outbox")
        bodies = column("SELECT text_body || ' ' || html_body FROM mail_outbox")
    assert names == [f"Acme {REDACTED} Ltd"] * len(FORMS)
    assert descriptions.count(f"SMS to customer who read out {REDACTED} on the phone") == len(FORMS)
    assert descriptions.count(f"to {REDACTED}") == len(FORMS)
    assert reasons.count(f"goodwill: customer pasted {REDACTED} into the chat") == len(FORMS)
    assert reasons.count(f"card {REDACTED} again") == len(FORMS)
    assert f"refund for {REDACTED}" in reasons
    assert sum(REDACTED in r for r in event_reasons) == 2 * len(FORMS) + 1
    assert subjects == [f"Receipt for card {REDACTED}"] * len(FORMS)
    assert all(b.count(REDACTED) == 2 for b in bodies) and len(bodies) == len(FORMS)
    assert REDACTED in log_text


# --- identifiers in error messages -------------------------------------------------------------


def _new_account() -> str:
    with unit_of_work() as uow:
        return str(accounts.create(uow, name="Echo", now=now())["id"])


def _echo_account_id(card: str) -> DomainError:
    with pytest.raises(DomainError) as info, unit_of_work() as uow:
        usage.debit(uow, account_id=card, amount="1", reference="r-1", now=now())
    return info.value


def _echo_payment_method_id(card: str) -> DomainError:
    account_id = _new_account()
    with pytest.raises(DomainError) as info, unit_of_work() as uow:
        top_ups.top_up(
            uow, account_id=account_id, amount="1.00", idempotency_key="k", payment_method_id=card
        )
    return info.value


def _echo_amount(card: str) -> DomainError:
    account_id = _new_account()
    with pytest.raises(DomainError) as info, unit_of_work() as uow:
        usage.debit(uow, account_id=account_id, amount=card, reference="r-1", now=now())
    return info.value


def _echo_psp(card: str) -> DomainError:
    account_id = _new_account()
    with pytest.raises(DomainError) as info, unit_of_work() as uow:
        payment_methods.add(uow, account_id=account_id, psp=card, nonce="x", now=now())
    return info.value


def _echo_email(card: str) -> DomainError:
    with pytest.raises(DomainError) as info, unit_of_work() as uow:
        accounts.create(uow, name="Echo", emails=[card], now=now())
    return info.value


@pytest.mark.parametrize(
    ("field", "refuse"),
    [
        ("account_id", _echo_account_id),
        ("payment_method_id", _echo_payment_method_id),
        ("amount", _echo_amount),
        ("psp", _echo_psp),
        ("email", _echo_email),
    ],
)
def test_a_card_number_in_any_field_is_never_echoed_in_the_error(
    field: str, refuse: Callable[[str], DomainError]
) -> None:
    for card in ("4111111111111111", "4111 1111 1111 1111"):
        error = refuse(card)
        assert error.field == field
        assert _leaks(str(error)) == [], str(error)
        assert _leaks(repr(error)) == [], repr(error)


def test_a_card_number_as_account_id_does_not_reach_the_worker_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    from worker.celery import app

    app.loader.import_default_modules()
    result = app.tasks["balance.payments.top_up"].apply(args=["4111111111111111", "10.00"])
    assert result.failed()
    assert "raised expected" in caplog.text
    assert _leaks(caplog.text) == []
