"""The Celery app: money-safe defaults, routing, the schedule and the beat lock.

- JSON only; acks_late + reject on worker loss, prefetch 1: a lost worker means redelivery,
  and every money task is idempotent, so redelivery is safe.
- One Redis visibility timeout, larger than the hard time limit, so a running task is
  never handed to a second worker.
- Beat uses RedBeat on Redis (a lock: one active beat per fleet, standbys wait).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from celery import Celery, signals
from kombu.entity import Exchange, Queue

from config import SettingsError, get_settings
from worker.client import RedactingAMQP
from worker.db.session import dispose_engine
from worker.kernel import task_names
from worker.psp.registry import check_enabled
from worker.schedule import beat_schedule

log = logging.getLogger(__name__)

try:
    settings = get_settings()
    check_enabled(settings)
except SettingsError as _exc:  # stop start-up with one line naming the setting
    print(f"balance-worker: invalid setting {_exc}", file=sys.stderr)
    raise SystemExit(1) from None

TASK_MODULES = [
    "worker.usage.tasks",
    "worker.ledger.tasks",
    "worker.outbox.tasks",
    "worker.charges.tasks",
    "worker.auto_reload.tasks",
    "worker.alerts.tasks",
    "worker.settlement.tasks",
    "worker.invoices.tasks",
    "worker.bank.tasks",
    "worker.numbers.tasks",
    "worker.refunds.tasks",
    "worker.wiring",  # the charge engine's outcome hooks
]

# Every message this app builds carries card numbers redacted in its header and task-sent
# event reprs (Redis, Flower); the body is untouched (worker/client.py).
app = Celery("balance-worker", include=TASK_MODULES, amqp=RedactingAMQP)
_broker = settings.effective_broker_url
_transport_options = {"visibility_timeout": settings.broker_visibility_timeout_seconds}

app.conf.update(
    broker_url=_broker,
    result_backend=settings.result_backend,
    broker_connection_retry_on_startup=True,
    broker_transport_options=_transport_options,
    result_backend_transport_options=_transport_options,
    result_expires=24 * 3600,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=settings.task_soft_time_limit_seconds,
    task_time_limit=settings.task_time_limit_seconds,
    task_default_queue=settings.task_queue,
    # Workers consume both queues; on-debit reloads never wait behind a sweep's backlog.
    # Each queue has its own exchange and routing key: bound to a shared key, Redis would
    # deliver every normal task to the urgent queue too.
    task_queues=[
        Queue(q, Exchange(q), routing_key=q)
        for q in (
            settings.task_queue,
            settings.urgent_queue,
            settings.bulk_queue,
            settings.outbox_queue,
        )
    ],
    task_default_exchange=settings.task_queue,
    task_default_routing_key=settings.task_queue,
    task_routes={
        settings.events_task: {"queue": settings.events_queue},
        task_names.AUTO_RELOAD_RELOAD_NOW: {"queue": settings.urgent_queue},
        # A sweep's thousands of reloads wait in their own queue: debits never queue behind.
        task_names.AUTO_RELOAD_RELOAD: {"queue": settings.bulk_queue},
        task_names.AUTO_RELOAD_RELOAD_BATCH: {"queue": settings.bulk_queue},
        # Outbox nudges (one a second per busy process) on their own queue: a sweep's batch
        # hands its thread over when a debit or an on-debit reload waits, not for these.
        task_names.EVENTS_RELAY: {"queue": settings.outbox_queue},
        task_names.MAIL_SEND_PENDING: {"queue": settings.outbox_queue},
    },
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    timezone="UTC",
    enable_utc=True,
    beat_schedule=beat_schedule(settings),
)

if _broker.startswith(("redis://", "rediss://")):
    app.conf.update(
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url=_broker,
        redbeat_key_prefix="balance-worker:redbeat",
        redbeat_lock_timeout=settings.beat_lock_timeout_seconds,
        beat_max_loop_interval=max(1, settings.beat_lock_timeout_seconds // 5),
    )
elif _broker.startswith("sqla+"):
    app.conf.update(
        beat_schedule_filename=str(settings.balance_home.resolve() / "celerybeat-schedule"),
        # kombu's SQLAlchemy transport hands its options to create_engine(): give it none.
        broker_transport_options={},
    )


# Nudges that only say "look at the outbox": one per window per process is enough. The
# first in a window is sent with the window as countdown, so it runs after every commit
# it stands for; the rest of the window is dropped. Beat runs these jobs anyway.
COALESCED_NUDGES = {task_names.EVENTS_RELAY: 1.0, task_names.MAIL_SEND_PENDING: 1.0}
_nudged_at: dict[str, float] = {}


def dispatch(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Send a follow-up task by name (called only after the DB transaction committed)."""
    options: dict[str, Any] = {}
    window = COALESCED_NUDGES.get(name)
    if window is not None and not args and not kwargs:
        moment = time.monotonic()
        if moment - _nudged_at.get(name, float("-inf")) < window:
            return
        _nudged_at[name] = moment
        options["countdown"] = window
    app.send_task(
        name,
        args=list(args),
        kwargs=kwargs,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2},
        **options,
    )


@signals.worker_process_init.connect
def _fresh_engine_per_child(**_: Any) -> None:
    """A prefork child must not use the parent's DB connections."""
    dispose_engine()
