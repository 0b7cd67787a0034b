"""Thin tasks of auto-reload: the sweep, a batch of reloads, one reload."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from config import get_settings
from worker import events_bound
from worker.auto_reload import batch
from worker.auto_reload import sweep as sweeps
from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.task_base import DbTask

log = logging.getLogger(__name__)


@app.task(name=task_names.AUTO_RELOAD_SWEEP, base=DbTask, bind=True)
def sweep(self: DbTask, as_of: str | None = None) -> sweeps.SweepResult:
    return sweeps.sweep(self.uow, parse_as_of(as_of))


# Nothing reads a reload's return value (the charge row and its events are the record):
# no result is stored, which saves a Redis write and its serialisation per reload.
@app.task(name=task_names.AUTO_RELOAD_RELOAD, base=DbTask, bind=True, ignore_result=True)
def reload(self: DbTask, account_id: str, as_of: str | None = None) -> dict[str, Any]:
    return batch.reload(self.uow, account_id, parse_as_of(as_of) if as_of else None)


def _redis_broker() -> bool:
    return get_settings().effective_broker_url.startswith(("redis://", "rediss://"))


def _batch_budget() -> float:
    """The longest a batch runs before handing the rest on: half the soft time limit where
    the broker can say whether interactive work waits (Redis); elsewhere one slice, since
    nothing else would free the thread for it."""
    half = get_settings().task_soft_time_limit_seconds / 2
    return half if _redis_broker() else _batch_slice()


def _batch_slice() -> float:
    settings = get_settings()
    return min(settings.auto_reload_batch_seconds, settings.task_soft_time_limit_seconds / 2)


_warned_at = float("-inf")


def _interactive_waiting() -> bool:
    """Is a debit, top-up, job or on-debit reload queued for a worker thread? (Redis: the
    length of the default and urgent queues.) A failed look never stops a batch: it answers
    False (the budget still ends the batch) and warns at most once a minute."""
    global _warned_at
    settings = get_settings()
    try:
        url = settings.effective_broker_url
        if not url.startswith(("redis://", "rediss://")):
            return False
        # A plain client, not kombu's channel client (worker/events_bound.py says why).
        pipe = events_bound.redis_client(url).pipeline()
        pipe.llen(settings.task_queue)
        pipe.llen(settings.urgent_queue)
        return any(int(n) > 0 for n in pipe.execute())
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # a monitoring question: a batch goes on without the answer
        if time.monotonic() - _warned_at > 60:
            _warned_at = time.monotonic()
            log.warning(
                "auto-reload: cannot see whether work waits (%s: %s)", type(exc).__name__, exc
            )
        return False


@app.task(name=task_names.AUTO_RELOAD_RELOAD_BATCH, base=DbTask, bind=True, ignore_result=True)
def reload_batch(self: DbTask, account_ids: list[str], as_of: str | None = None) -> dict[str, Any]:
    """The sweep's reloads, a batch to a message. Between chunks of about
    `AUTO_RELOAD_BATCH_SECONDS` it hands the rest on when interactive work waits for a
    thread (Redis), and after half the soft time limit in any case (other brokers: after
    one slice)."""
    return batch.reload_batch(
        self.uow,
        account_ids,
        parse_as_of(as_of) if as_of else None,
        budget_seconds=_batch_budget(),
        slice_seconds=_batch_slice(),
        others_waiting=_interactive_waiting if _redis_broker() else lambda: False,
        stops=(SoftTimeLimitExceeded,),
    )


@app.task(name=task_names.AUTO_RELOAD_RELOAD_NOW, base=DbTask, bind=True, ignore_result=True)
def reload_now(self: DbTask, account_id: str) -> dict[str, Any]:
    """The same reload, routed to the urgent queue for the debit that crossed the threshold."""
    return batch.reload(self.uow, account_id)
