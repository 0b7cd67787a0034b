"""The janitors' claim-ask-apply loop (worker/kernel/claims.py): one broken row, even one
whose failure cannot be recorded, never stops the others, and every transaction ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from worker.kernel.claims import Drained, drain


@dataclass(frozen=True)
class Row:
    row_id: str


class Tx:
    def __init__(self) -> None:
        self.log: list[str] = []

    def commit(self) -> None:
        self.log.append("commit")

    def rollback(self) -> None:
        self.log.append("rollback")


def _run(
    rows: list[str], *, bad: set[str], unrecordable: set[str], batch_size: int = 100
) -> tuple[Drained, Tx, list[str], list[str]]:
    tx, resolved, recovered = Tx(), [], []
    queue = list(rows)

    def claim_next(seen: set[str]) -> Row | None:
        for row_id in queue:
            if row_id not in seen:
                return Row(row_id)
        return None

    def resolve(claim: Row) -> bool:
        tx.log.append(f"resolve {claim.row_id}")
        if claim.row_id in bad:
            raise RuntimeError(f"boom {claim.row_id}")
        resolved.append(claim.row_id)
        return True

    def recover(claim: Row, exc: Exception) -> None:
        tx.log.append(f"recover {claim.row_id}")
        assert str(exc) == f"boom {claim.row_id}"
        if claim.row_id in unrecordable:
            raise ConnectionError("lost the database too")
        recovered.append(claim.row_id)

    done = drain(
        tx,
        claim_next=claim_next,
        resolve=resolve,
        recover=recover,
        batch_size=batch_size,
        log=logging.getLogger("test.claims"),
        failed="sync failed for",
    )
    return done, tx, resolved, recovered


def test_a_row_that_raises_is_rolled_back_recovered_and_the_rest_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="test.claims"):
        done, tx, resolved, recovered = _run(["a", "b", "c"], bad={"b"}, unrecordable=set())
    assert done == Drained(checked=3, resolved=2)
    assert resolved == ["a", "c"] and recovered == ["b"]
    assert tx.log == [
        "resolve a", "commit",
        "resolve b", "rollback", "recover b", "commit",
        "resolve c", "commit",
        "commit",
    ]  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == ["sync failed for b"]


def test_a_failure_that_cannot_be_recorded_is_rolled_back_and_the_rest_still_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="test.claims"):
        done, tx, resolved, _ = _run(["a", "b", "c"], bad={"a", "b"}, unrecordable={"a"})
    assert done == Drained(checked=3, resolved=1)
    assert resolved == ["c"]
    assert tx.log[:4] == ["resolve a", "rollback", "recover a", "rollback"]
    assert tx.log[-1] == "commit"
    assert "could not record the failure of a" in [r.getMessage() for r in caplog.records]


def test_each_row_is_claimed_once_per_run_and_the_batch_is_bounded() -> None:
    done, _, resolved, _ = _run(["a", "b", "c", "d"], bad=set(), unrecordable=set(), batch_size=3)
    assert done == Drained(checked=3, resolved=3) and resolved == ["a", "b", "c"]
