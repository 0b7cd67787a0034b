"""Claim, ask, apply: the loop the janitors run over rows whose outcome is unknown
(charges: worker/charges/janitor.py; refunds: worker/refunds/janitor.py).

Per row: `claim_next` takes the next due row in a short transaction that COMMITs (the claim
moves the row's next look-up on, so a concurrent janitor does not ask too); `resolve` asks
the PSP holding no lock and applies the answer under a fresh row lock; its transaction is
committed here. A row that raises is isolated (rolled back, logged with its traceback,
handed to `recover`, which backs it off or flags it, in a transaction of its own) and the
loop goes on, so one broken row never stops the others. An exception in `stops` (the task's
soft time limit) is rolled back and raised: it ends the run, the rows after it untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Transaction(Protocol):
    """What the loop needs of a unit of work (worker/db/session.py's UnitOfWork)."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class Claimed(Protocol):
    """A claim: plain values read under the claim's row lock, named by the row's id."""

    @property
    def row_id(self) -> str: ...


C = TypeVar("C", bound=Claimed)

Stops = tuple[type[BaseException], ...]
"""Exceptions that end a whole run rather than one row (the task's soft time limit)."""


def failure(exc: BaseException) -> str:
    """How a row's failure is recorded (its attention reason): "sync error: KeyError: 'x'",
    at most 300 characters."""
    return f"sync error: {type(exc).__name__}: {exc}"[:300]


@dataclass(frozen=True)
class Drained:
    """Rows claimed and asked about (`checked`), and those that reached a final state."""

    checked: int
    resolved: int


def drain(
    tx: Transaction,
    *,
    claim_next: Callable[[set[str]], C | None],
    resolve: Callable[[C], bool],
    recover: Callable[[C, Exception], None],
    batch_size: int,
    log: logging.Logger,
    failed: str,
    stops: Stops = (),
) -> Drained:
    """Claim and resolve up to `batch_size` due rows, one at a time.

    `claim_next(seen)`: the next due row not in `seen` (ids), claimed and committed, or None
    when none is due. `resolve(claim)`: True when the row reached a final state; it does not
    commit (the loop does). `recover(claim, exc)`: after `resolve` raised and was rolled back;
    committed by the loop; if it raises too, that is rolled back and logged and the loop goes
    on (the claim already backed the row off). `failed`: the log line's words before the
    row's id ("payment sync failed for charge"). A row is claimed at most once per run, so a
    row that stays due cannot starve the others. A row counts as resolved once its
    transaction is committed (a commit that raises is that row's failure). `stops`:
    exceptions that end the whole run (Celery's SoftTimeLimitExceeded, passed in by the
    task): rolled back and raised, from `resolve`, the commit or `recover`.
    """
    checked = resolved = 0
    seen: set[str] = set()
    while checked < batch_size:
        claim = claim_next(seen)
        if claim is None:
            break
        seen.add(claim.row_id)
        checked += 1
        try:
            final = resolve(claim)
            tx.commit()
        except stops:  # the run must end (its time is up): nothing of this row is kept
            tx.rollback()
            raise
        except Exception as exc:  # isolate it: the claim already backed it off
            tx.rollback()
            log.exception("%s %s", failed, claim.row_id)
            try:
                recover(claim, exc)
                tx.commit()
            except stops:
                tx.rollback()
                raise
            except Exception:
                tx.rollback()
                log.exception("could not record the failure of %s", claim.row_id)
        else:
            if final:  # counted once committed
                resolved += 1
    tx.commit()
    return Drained(checked, resolved)
