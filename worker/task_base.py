"""The one task base class: it owns the DB session of a task run.

Commit on success, roll back on error, and only then send follow-up messages
(pattern from pypi/warehouse's WarehouseTask). Refusals (DomainError) are expected
outcomes, not crashes: they are not retried and are logged without a traceback.
"""

from __future__ import annotations

import inspect
from contextvars import ContextVar
from typing import Any

from celery import Task
from celery.worker.request import Request
from sqlalchemy.exc import OperationalError

from worker.db.session import UnitOfWork, unit_of_work
from worker.kernel import controls
from worker.kernel.errors import DomainError
from worker.kernel.redaction import redact, redact_repr

_current: ContextVar[UnitOfWork | None] = ContextVar("balance_uow", default=None)


def _redact_value(value: Any) -> Any:
    """`value` with card numbers in every string (inside lists and objects too) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, dict):
        return {_redact_value(k): _redact_value(v) for k, v in value.items()}
    return value


class RedactingRequest(Request):  # type: ignore[misc]
    """A received message as our workers report it (the `task-received` event Flower shows,
    `celery inspect active`, the request's repr in logs), with card numbers redacted,
    whatever the sender did: a caller that did not install worker.client's hook still has
    them in Redis, but not in our monitor. The task itself gets the arguments as sent."""

    _argsrepr: str
    _kwargsrepr: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr = redact_repr(self._argsrepr) or ""
        self._kwargsrepr = redact_repr(self._kwargsrepr) or ""

    def info(self, safe: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = super().info(safe=safe)
        if not safe:  # the raw arguments, for `inspect active`: the same shape, redacted
            info["args"] = _redact_value(info["args"])
            info["kwargs"] = _redact_value(info["kwargs"])
        return info


class DbTask(Task):  # type: ignore[misc]
    abstract = True
    Request = RedactingRequest
    acks_late = True
    reject_on_worker_lost = True
    throws = (DomainError,)
    # A dropped DB connection is retried with backoff (tasks are idempotent); the
    # countdown stays far below the broker's visibility timeout.
    autoretry_for = (OperationalError,)
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5

    # Arguments that are free text (cleaned by the service, not refused at the boundary);
    # a task declares them in its decorator: `@app.task(..., free_text=("description",))`.
    free_text: tuple[str, ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from worker.celery import dispatch

        check_arguments(self, args, kwargs)
        with unit_of_work(dispatch=dispatch) as uow:
            token = _current.set(uow)
            try:
                return super().__call__(*args, **kwargs)
            finally:
                _current.reset(token)

    @property
    def uow(self) -> UnitOfWork:
        uow = _current.get()
        if uow is None:
            raise RuntimeError("no unit of work: call the task, not task.run")
        return uow


_signatures: dict[str, inspect.Signature] = {}


def check_arguments(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The task boundary (issue 11): before any query, every string in the arguments but the
    task's `free_text` is free of control characters, or ValidationError names the argument
    (`worker.controls.check_arguments`). So a task added later is covered without
    anyone remembering to. Arguments that do not fit the signature are left to the call,
    which reports them as Celery always has."""
    signature = _signatures.get(task.name)
    if signature is None:
        signature = _signatures[task.name] = inspect.signature(task.run)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return
    controls.check_arguments(bound.arguments, free_text=task.free_text)


def task_key(task_id: str) -> str:
    """An idempotency key from a message id (dashes dropped: uuid groups never read as digits)."""
    return f"task-{task_id.replace('-', '')}"
