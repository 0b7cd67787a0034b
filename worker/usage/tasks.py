from __future__ import annotations

from typing import Any

from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import now
from worker.task_base import DbTask
from worker.usage import service as usage


@app.task(name=task_names.USAGE_DEBIT, base=DbTask, bind=True, free_text=("description",))
def debit(
    self: DbTask, account_id: str, amount: str, reference: str, description: str | None = None
) -> dict[str, Any]:
    return usage.debit(
        self.uow,
        account_id=account_id,
        amount=amount,
        reference=reference,
        description=description,
        now=now(),
    )
