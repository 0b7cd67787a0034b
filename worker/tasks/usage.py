from __future__ import annotations

from typing import Any

from worker.celery import app
from worker.clock import now
from worker.services import usage
from worker.tasks.base import DbTask


@app.task(name="balance.usage.debit", base=DbTask, bind=True, free_text=("description",))
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
