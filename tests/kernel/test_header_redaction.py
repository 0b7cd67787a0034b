"""Card numbers stay out of the broker's message headers and the monitor (issue 11, item 10).

A description holding a card number is redacted before the worker stores it, but Celery
copies every argument into the message headers (`argsrepr`, `kwargsrepr`: Redis keeps them,
Flower shows them) and into the `task-sent` event. Here the raw messages are read back from
real Redis: what our code publishes, and what a caller's app publishes once it installed
`worker.client.install_header_redaction`, carry [REDACTED] there; the body still carries
what was sent (the worker redacts before storing).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, signals

from worker.client import HOOK_UID, install_header_redaction, redact_headers
from worker.kernel.redaction import REDACTED, redact_repr

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

CARD = "4111 1111 1111 1111"  # Luhn-valid (the Visa test number)
PAN = CARD.replace(" ", "")


def _leaks(text: str) -> bool:
    return PAN in re.sub(r"[\s-]", "", text)


def _decode(raw: bytes) -> dict[str, Any]:
    """A kombu Redis message: its headers, and its body (args, kwargs, embed)."""
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    return {"headers": envelope["headers"], "args": args, "kwargs": kwargs, "raw": raw}


@pytest.fixture
def hook_off() -> Iterator[None]:
    """The hook is process-wide once connected: each test starts and ends without it."""
    signals.before_task_publish.disconnect(dispatch_uid=HOOK_UID)
    yield
    signals.before_task_publish.disconnect(dispatch_uid=HOOK_UID)


@pytest.fixture
def queue(broker_url: str) -> Iterator[tuple[str, redis.Redis]]:
    name = f"test-redaction-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(broker_url)
    yield name, client
    client.delete(name)


def _caller_app(broker_url: str) -> Celery:
    """Another service's app: its own name and configuration, sending by task name."""
    app = Celery(f"caller-{uuid.uuid4().hex[:8]}", broker=broker_url, set_as_current=False)
    app.conf.task_send_sent_event = True
    return app


def _send(app: Celery, queue: str, marker: str) -> dict[str, Any]:
    app.send_task(
        "balance.usage.debit",
        args=["acc_x", "0.0057", marker, f"SMS to customer who read out {CARD}"],
        kwargs={"note": f"card {PAN} again", "nested": [{"deep": CARD}]},
        queue=queue,
    )
    return {"marker": marker}


def _only_message(client: redis.Redis, queue: str) -> dict[str, Any]:
    raw = client.lrange(queue, 0, -1)
    assert len(raw) == 1
    return _decode(raw[0])


def _assert_redacted(message: dict[str, Any]) -> None:
    headers = message["headers"]
    for key in ("argsrepr", "kwargsrepr"):
        assert not _leaks(headers[key]), (key, headers[key])
        assert REDACTED in headers[key], (key, headers[key])
    # The redacted text is still the arguments' text, with only the number replaced.
    assert f"SMS to customer who read out {REDACTED}" in headers["argsrepr"]
    assert f"card {REDACTED} again" in headers["kwargsrepr"]


def test_without_the_hook_a_callers_headers_carry_the_card_number(
    broker_url: str, queue: tuple[str, redis.Redis], hook_off: None
) -> None:
    """What the fix is for: Celery alone copies the number into the headers."""
    name, client = queue
    _send(_caller_app(broker_url), name, "m-1")
    message = _only_message(client, name)
    assert _leaks(message["headers"]["argsrepr"])
    assert _leaks(message["headers"]["kwargsrepr"])


def test_a_callers_app_with_the_hook_installed_sends_redacted_headers(
    broker_url: str, queue: tuple[str, redis.Redis], hook_off: None
) -> None:
    name, client = queue
    app = _caller_app(broker_url)
    install_header_redaction(app)
    install_header_redaction(app)  # twice is once
    _send(app, name, "m-2")
    message = _only_message(client, name)
    _assert_redacted(message)
    # The body is what the caller sent: the worker gets the text and redacts it itself.
    assert message["args"][3] == f"SMS to customer who read out {CARD}"
    assert message["kwargs"]["note"] == f"card {PAN} again"
    # ... and the app's task-sent monitoring event (Flower) has the redacted text too.
    built = app.amqp.create_task_message(
        uuid.uuid4().hex,
        "balance.usage.debit",
        ["acc_x", "1", "r", CARD],
        {},
        create_sent_event=True,
    )
    assert built.sent_event["args"] == f"['acc_x', '1', 'r', '{REDACTED}']"


def test_the_signal_receiver_alone_redacts_the_headers(
    broker_url: str, queue: tuple[str, redis.Redis], hook_off: None
) -> None:
    """For a caller who wires signals itself: `before_task_publish.connect(redact_headers)`."""
    name, client = queue
    signals.before_task_publish.connect(redact_headers, weak=False, dispatch_uid=HOOK_UID)
    _send(_caller_app(broker_url), name, "m-3")
    _assert_redacted(_only_message(client, name))


def test_what_our_app_publishes_is_redacted(
    broker_url: str, queue: tuple[str, redis.Redis], hook_off: None
) -> None:
    """Our sends (the CLI's follow-ups and `dispatch` go through this app) need no hook."""
    from config import get_settings
    from worker.celery import app, dispatch

    name, client = queue
    _send(app, name, "m-4")
    _assert_redacted(_only_message(client, name))

    # `dispatch`, the follow-up path of every task and command, on the real routing.
    marker = f"m-{uuid.uuid4().hex}"
    routed = get_settings().task_queue
    dispatch("balance.usage.debit", ("acc_x", "1", marker, f"to {CARD}"), {"memo": PAN})
    mine = [m for m in map(_decode, client.lrange(routed, 0, -1)) if m["args"][2:3] == [marker]]
    assert len(mine) == 1
    client.lrem(routed, 1, mine[0]["raw"])
    headers = mine[0]["headers"]
    assert not _leaks(headers["argsrepr"]) and not _leaks(headers["kwargsrepr"])
    assert f"to {REDACTED}" in headers["argsrepr"] and REDACTED in headers["kwargsrepr"]

    # The task-sent event our app emits (task_send_sent_event is on) is redacted as well.
    built = app.amqp.create_task_message(
        uuid.uuid4().hex,
        "balance.usage.debit",
        ["acc_x", "1", "r", CARD],
        {},
        create_sent_event=True,
    )
    assert not _leaks(json.dumps(built.sent_event))
    assert not _leaks(json.dumps(built.headers))


def test_a_card_number_cut_by_celerys_repr_limit_loses_its_digits_too(
    broker_url: str, queue: tuple[str, redis.Redis], hook_off: None
) -> None:
    """Celery cuts a repr at 1,024 characters: a number cut there is no longer Luhn-valid
    but still shows its first digits; they go as well."""
    name, client = queue
    app = _caller_app(broker_url)
    install_header_redaction(app)
    padding = "x" * 1000
    app.send_task("balance.usage.debit", args=[f"{padding}{CARD}{padding}"], queue=name)
    argsrepr = _only_message(client, name)["headers"]["argsrepr"]
    assert argsrepr.endswith(f"{REDACTED}...',)") or argsrepr.endswith(f"{REDACTED}...']")
    assert "4111" not in argsrepr


def test_our_workers_report_a_received_message_redacted_whatever_the_sender_did(
    broker_url: str, queue: tuple[str, redis.Redis], hook_off: None
) -> None:
    """A caller without the hook still puts the number in Redis; what our workers report
    about the message (the task-received event Flower shows, `inspect active`, the request's
    repr in logs) is redacted, and the task still gets the arguments as sent."""
    from kombu import Connection

    from worker.celery import app

    app.loader.import_default_modules()
    name, _client = queue
    _send(_caller_app(broker_url), name, "m-5")
    with Connection(broker_url) as conn:
        message = conn.default_channel.basic_get(name)
        assert message is not None
        assert _leaks(message.headers["argsrepr"])  # as the careless caller sent it
        task = app.tasks["balance.usage.debit"]
        request = task.Request(message, app=app, task=task)
    assert isinstance(request, task.Request)
    for reported in (request.argsrepr, request.kwargsrepr, repr(request)):
        assert not _leaks(reported), reported
        assert REDACTED in reported
    for info in (request.info(), request.info(safe=True)):
        assert not _leaks(json.dumps(info, default=str)), info
    assert request.info()["args"][3] == f"SMS to customer who read out {REDACTED}"
    assert request.args[3] == f"SMS to customer who read out {CARD}"  # the task's own input


@pytest.mark.parametrize(
    "joined", ["4111-1111-1111-1111", "4111 - 1111 - 1111 - 1111", "4111\xa01111\xa01111\xa01111"]
)
@pytest.mark.parametrize("pad", range(990, 1030))
def test_a_cut_that_falls_just_after_a_separator_still_loses_the_digits(
    joined: str, pad: int
) -> None:
    """Wherever Celery's 1,024-character cut falls inside a grouped card number (after a
    digit, or just after a separator), no more than its first six digits stay."""
    from celery.utils.saferepr import saferepr

    argsrepr = saferepr((f"{'x' * pad} {joined} thanks",), 1024)
    redacted = redact_repr(argsrepr) or ""
    digits = "".join(c for c in redacted if c.isdigit())
    assert len(digits) <= 6, redacted[-40:]
