from __future__ import annotations

from typing import Any

from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import now
from worker.task_base import DbTask
from worker.usage import batch
from worker.usage import service as usage


@app.task(name=task_names.USAGE_DEBIT, base=DbTask, bind=True, free_text=("description",))
def debit(
    self: DbTask, account_id: str, amount: str, reference: str, description: str | None = None
) -> dict[str, Any]:
    """One usage debit (CONTRACT.md): `amount` a decimal string; see worker/usage/service.py."""
    return usage.debit(
        self.uow,
        account_id=account_id,
        amount=amount,
        reference=reference,
        description=description,
        now=now(),
    )


# `debits` is exempt from the boundary's control-character refusal (it would refuse the
# whole message for one bad debit): each debit's fields get `debit`'s own checks instead,
# and a bad one is refused alone (worker/usage/batch.py).
@app.task(name=task_names.USAGE_DEBIT_MANY, base=DbTask, bind=True, free_text=("debits",))
def debit_many(self: DbTask, debits: list[dict[str, Any]]) -> dict[str, Any]:
    """Up to 1,000 debits `{account_id, amount, reference, description?}` in one message and
    one transaction; `{"results": [...]}` in input order (worker/usage/batch.py). Raises
    ValidationError naming `debits` when the list itself is malformed."""
    return batch.debit_many(self.uow, debits=debits, now=now())
