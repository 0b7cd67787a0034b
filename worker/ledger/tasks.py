from __future__ import annotations

import logging

from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import isoformat, now
from worker.ledger import adjustments
from worker.ledger import service as ledger
from worker.outbox import events
from worker.task_base import DbTask
from worker.task_base import task_key as _task_key

log = logging.getLogger(__name__)


@app.task(name=task_names.LEDGER_ADJUST, base=DbTask, bind=True, free_text=("reason",))
def adjust(
    self: DbTask, account_id: str, amount: str, reason: str, reference: str | None = None
) -> adjustments.AdjustResult:
    # Without a caller reference the message id serves: a redelivery never credits twice.
    ref = reference if reference is not None else (self.request.id and _task_key(self.request.id))
    return adjustments.adjust(
        self.uow, account_id=account_id, amount=amount, reason=reason, reference=ref, now=now()
    )


@app.task(name=task_names.LEDGER_AUDIT, base=DbTask, bind=True)
def audit(self: DbTask) -> ledger.AuditReport:
    report = ledger.audit(self.uow.session)
    if not report["ok"]:
        log.error("ledger audit FAILED: %s", report)
        at = now()
        events.record(
            self.uow,
            "ledger.audit_failed",
            None,
            {
                "at": isoformat(at),
                "mismatches": report["mismatches"][:50],
                "unbalanced_transactions": report["unbalanced_transactions"][:50],
            },
            at,
        )
    return report
