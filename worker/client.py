"""Sending tasks without card numbers in Celery's message headers (issue 11, item 10).

Celery copies a task's arguments into the message headers as text (`argsrepr`,
`kwargsrepr`) and into its `task-sent` monitoring event: Redis keeps the headers (and its
AOF), workers log them on receipt and report them in `task-received` events, and Flower
shows them. The worker redacts card numbers in free text before it stores anything, but it
cannot take back what a message already carried. So whoever publishes redacts these copies:

- our own app (`worker.celery.app`: the CLI's follow-ups, `worker.celery.dispatch`, the
  events relay, retries) is built with `RedactingAMQP`;
- another service installs the same on its own Celery app, before it sends:

      from celery import Celery
      from worker.client import install_header_redaction

      app = Celery("billing-api", broker="redis://...")
      install_header_redaction(app)
      app.send_task("balance.usage.debit", args=[account_id, "0.0057", "msg-1", text])

The message body still carries the arguments as sent (the worker needs them); the worker
redacts free text before storing it. This module reads no settings and opens no database,
so any service can import it. Redaction rules: worker/redaction.py.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.app.amqp import AMQP

from worker.kernel.redaction import redact_repr

HOOK_UID = "balance-worker.redact_headers"
_REPRS = ("argsrepr", "kwargsrepr")
_EVENT_REPRS = ("args", "kwargs")


def redact_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """A `before_task_publish` receiver: card numbers in the message's `argsrepr` and
    `kwargsrepr` headers become [REDACTED]; nothing else changes. Connect it yourself
    (`before_task_publish.connect(redact_headers)`) or with `install_header_redaction`."""
    if not headers:
        return
    for key in _REPRS:
        value = headers.get(key)
        if isinstance(value, str):
            headers[key] = redact_repr(value)


def _redact_message(message: Any) -> Any:
    """A protocol-2 task message with its header and `task-sent` event reprs redacted."""
    redact_headers(message.headers)
    event = message.sent_event
    if event:
        for key in _EVENT_REPRS:
            if isinstance(event.get(key), str):
                event[key] = redact_repr(event[key])
    return message


class _RedactingMixin:
    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        return _redact_message(super().as_task_v2(*args, **kwargs))  # type: ignore[misc]


class RedactingAMQP(_RedactingMixin, AMQP):  # type: ignore[misc]
    """Celery's AMQP with redacted reprs in every message it builds, headers and `task-sent`
    event alike: `Celery("name", amqp="worker.client:RedactingAMQP")`."""


def install_header_redaction(app: Celery) -> None:
    """Make everything `app` publishes carry redacted reprs (idempotent).

    Connects `redact_headers` to `before_task_publish` (once; the signal is process-wide, so
    other apps in the process send redacted headers too), and wraps the app's message
    builder, so its `task-sent` events (`task_send_sent_event`), which that signal cannot
    reach, are redacted as well. An app built with `amqp=RedactingAMQP` needs neither.
    """
    signals.before_task_publish.connect(redact_headers, weak=False, dispatch_uid=HOOK_UID)
    amqp = app.amqp
    build = amqp.task_protocols[2]
    if isinstance(amqp, _RedactingMixin) or getattr(build, "redacting", False):
        return

    def redacting_build(*args: Any, **kwargs: Any) -> Any:
        return _redact_message(build(*args, **kwargs))

    redacting_build.redacting = True  # type: ignore[attr-defined]
    amqp.task_protocols[2] = redacting_build
    # Celery caches the builder it picked on first use: let it pick again.
    amqp.__dict__.pop("create_task_message", None)
