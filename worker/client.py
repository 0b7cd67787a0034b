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

import atexit
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
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


# --- the producer-side debit batcher (issue 16) ---------------------------------------------------

DEBIT_MANY = "balance.usage.debit_many"  # worker/kernel/task_names.py; CONTRACT.md
MAX_DEBITS_PER_MESSAGE = 1000  # the task's own limit (worker/usage/batch.py)


class BatcherFull(Exception):
    """`DebitBatcher.submit` waited `submit_timeout` seconds and no room came free."""


class BatcherClosed(RuntimeError):
    """`DebitBatcher.submit` after `close()`."""


@dataclass
class _Item:
    debit: dict[str, Any]
    future: Future[dict[str, Any]]


class DebitBatcher:
    """Collects usage debits and sends them as `balance.usage.debit_many` messages: one
    message per `max_batch` debits or per `max_wait_ms` milliseconds, whichever comes
    first, so a platform debiting a thousand times a second sends a few messages instead
    of a thousand (CONTRACT.md "Batched usage debits"; README "Usage debits in batches").
    A batch goes only when one of the `max_in_flight` senders is free: while all wait for
    results, debits keep collecting, so under load messages grow (to `max_batch`) instead
    of queueing up in the broker.

        from celery import Celery
        from worker.client import DebitBatcher

        app = Celery("billing-api", broker="redis://...", backend="redis://...")
        with DebitBatcher(app, max_batch=500, max_wait_ms=20) as batcher:
            future = batcher.submit(account_id, "0.0057", "msg-123", "SMS to +44...")
            result = future.result(timeout=30)   # {"status": "ok"/"duplicate"/"refused", ...}

    `submit` returns a `concurrent.futures.Future` per debit: its result is that debit's
    entry of the task's `results` (`{account_id, reference, status, balance, currency,
    transaction_id, error}`); a refused debit is a result with `status: "refused"` and
    `error {code, field, message}`, not an exception, since the others in its message went
    through. When the message cannot be sent, or the task fails as a whole (a malformed
    list, a worker error, no result within `result_timeout` seconds), every future of that
    message gets the exception. Each debit is idempotent by (account, reference), so a
    caller that got an exception may submit the same debit again.

    Memory is bounded: at most `max_pending` debits are held (collected or in flight). When
    that many are, `submit` BLOCKS (back-pressure) until results come back, for at most
    `submit_timeout` seconds (None: as long as it takes), then raises `BatcherFull`.
    `max_in_flight` messages wait for their results at a time (one thread each).

    `close()` (also on leaving the `with` block, and at interpreter exit for a batcher not
    closed) sends what was collected and waits for every result; `flush()` sends what was
    collected now without waiting for `max_wait_ms`. The app needs a result backend. Header
    redaction (`install_header_redaction`) is installed on `app`: descriptions are free text.
    """

    def __init__(
        self,
        app: Celery,
        *,
        max_batch: int = 500,
        max_wait_ms: float = 20.0,
        max_pending: int = 20_000,
        max_in_flight: int = 8,
        result_timeout: float = 60.0,
        submit_timeout: float | None = None,
        task_name: str = DEBIT_MANY,
        send_options: dict[str, Any] | None = None,
    ) -> None:
        if not 1 <= max_batch <= MAX_DEBITS_PER_MESSAGE:
            raise ValueError(f"max_batch must be 1..{MAX_DEBITS_PER_MESSAGE}, not {max_batch}")
        if max_pending < max_batch:
            raise ValueError("max_pending must be at least max_batch")
        if max_wait_ms < 0 or max_in_flight < 1:
            raise ValueError("max_wait_ms must be >= 0 and max_in_flight >= 1")
        install_header_redaction(app)
        self.app = app
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_pending = max_pending
        self.result_timeout = result_timeout
        self.submit_timeout = submit_timeout
        self.task_name = task_name
        self.send_options = dict(send_options or {})
        self._cond = threading.Condition()
        self._buffer: list[_Item] = []
        self._oldest = 0.0  # monotonic time the oldest collected debit arrived
        self._held = 0  # collected + in flight: what max_pending bounds
        self._flush_now = False
        self._closed = False
        self._idle = 0  # sender threads waiting for a batch
        # Own daemon threads, not a ThreadPoolExecutor: the executor refuses work once the
        # interpreter starts shutting down, before atexit runs `close`, and the flush on exit
        # would fail every collected debit. Daemon threads still run during atexit.
        self._batches: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._senders = [
            threading.Thread(target=self._sender, name=f"debit-batcher-send-{n}", daemon=True)
            for n in range(max_in_flight)
        ]
        self._collector = threading.Thread(
            target=self._collect, name="debit-batcher-collect", daemon=True
        )
        for thread in [*self._senders, self._collector]:
            thread.start()
        atexit.register(self.close)

    def submit(
        self, account_id: str, amount: str, reference: str, description: str | None = None
    ) -> Future[dict[str, Any]]:
        """Queue one debit (`amount` a decimal string, as `balance.usage.debit` takes it) and
        return the future of its result. Blocks while `max_pending` debits are held; raises
        `BatcherFull` after `submit_timeout` seconds, `BatcherClosed` after `close()`."""
        debit: dict[str, Any] = {"account_id": account_id, "amount": amount, "reference": reference}
        if description is not None:
            debit["description"] = description
        item = _Item(debit, Future())
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._closed or self._held < self.max_pending, self.submit_timeout
            ):
                raise BatcherFull(f"{self._held} debits held (max_pending={self.max_pending})")
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.append(item)
            self._held += 1
            # The collector learns of a first debit (its clock starts) and of a full batch.
            if len(self._buffer) == 1 or len(self._buffer) >= self.max_batch:
                self._cond.notify_all()
        return item.future

    def flush(self) -> None:
        """Send what is collected now (results still arrive on the futures)."""
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking debits, send what is collected, wait for every result (idempotent)."""
        with self._cond:
            already = self._closed
            self._closed = True
            self._cond.notify_all()
        if already:
            return
        atexit.unregister(self.close)
        self._collector.join(timeout)
        for _ in self._senders:
            self._batches.put(None)
        for thread in self._senders:
            thread.join(timeout)

    def __enter__(self) -> DebitBatcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def held(self) -> int:
        """Debits collected or in flight now."""
        with self._cond:
            return self._held

    def _collect(self) -> None:
        """The collector thread: hands a batch to an idle sender when it is full, its oldest
        debit has waited `max_wait_ms`, or on flush/close; exits once closed and empty.

        Only to an idle sender: while all `max_in_flight` messages are out, debits keep
        collecting (up to `max_batch`) instead of queueing as many small messages, so a
        loaded fleet gets fewer, larger messages and the wait stays about one message's time
        (the batch size adapts to the load)."""
        while True:
            with self._cond:
                while True:
                    if self._closed and not self._buffer:
                        return
                    if not self._buffer:
                        self._flush_now = False
                        self._cond.wait()
                        continue
                    if not self._idle:
                        self._cond.wait()  # a sender notifies when it is free again
                        continue
                    due = len(self._buffer) >= self.max_batch or self._flush_now or self._closed
                    left = self._oldest + self.max_wait - time.monotonic()
                    if due or left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._buffer[: self.max_batch]
                del self._buffer[: self.max_batch]
                self._idle -= 1
                if self._buffer:
                    self._oldest = time.monotonic()  # the rest waited less; close enough
                else:
                    self._flush_now = False
            self._batches.put(batch)

    def _sender(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                self._cond.notify_all()
            batch = self._batches.get()
            if batch is None:
                return
            self._send(batch)

    def _send(self, batch: list[_Item]) -> None:
        """One message for `batch`; its results (or its error) onto the futures."""
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        try:
            if live:
                sent = self.app.send_task(
                    self.task_name, kwargs={"debits": [i.debit for i in live]}, **self.send_options
                )
                reply = sent.get(timeout=self.result_timeout)
                results = reply.get("results") if isinstance(reply, dict) else None
                if not isinstance(results, list) or len(results) != len(live):
                    raise RuntimeError(f"{self.task_name} returned no result per debit: {reply!r}")
                for item, result in zip(live, results, strict=True):
                    item.future.set_result(result)
        except BaseException as exc:  # every debit of the message learns what happened
            self._fail(live, exc)
        finally:
            with self._cond:
                self._held -= len(batch)
                self._cond.notify_all()

    @staticmethod
    def _fail(batch: list[_Item], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)
