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


class Stop(Exception):
    """Stands for Celery's SoftTimeLimitExceeded (an Exception too)."""


class Tx:
    def __init__(self, failing_commits: set[int] | None = None) -> None:
        self.log: list[str] = []
        self.failing_commits = failing_commits or set()  # 1-based commit calls that raise

    def commit(self) -> None:
        self.log.append("commit")
        if self.log.count("commit") in self.failing_commits:
            raise ConnectionError("the commit failed")

    def rollback(self) -> None:
        self.log.append("rollback")


def _run(
    rows: list[str],
    *,
    bad: set[str],
    unrecordable: set[str],
    batch_size: int = 100,
    failing_commits: set[int] | None = None,
) -> tuple[Drained, Tx, list[str], list[str]]:
    tx, resolved, recovered = Tx(failing_commits), [], []
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
        if isinstance(exc, ConnectionError):  # its commit failed
            recovered.append(claim.row_id)
            return
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
        stops=(Stop,),
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


def test_a_stop_exception_is_rolled_back_and_ends_the_run_the_later_rows_untouched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tx = Tx()
    resolved: list[str] = []
    tx_log = tx.log

    def claim_next(seen: set[str]) -> Row | None:
        return next((Row(r) for r in ["a", "b", "c"] if r not in seen), None)

    def resolve(claim: Row) -> bool:
        tx_log.append(f"resolve {claim.row_id}")
        if claim.row_id == "b":
            raise Stop("time is up")
        resolved.append(claim.row_id)
        return True

    def recover(claim: Row, exc: Exception) -> None:  # must not run
        tx_log.append(f"recover {claim.row_id}")

    with caplog.at_level(logging.ERROR, logger="test.claims"), pytest.raises(Stop):
        drain(
            tx,
            claim_next=claim_next,
            resolve=resolve,
            recover=recover,
            batch_size=100,
            log=logging.getLogger("test.claims"),
            failed="sync failed for",
            stops=(Stop,),
        )
    assert tx_log == ["resolve a", "commit", "resolve b", "rollback"]  # c never claimed
    assert resolved == ["a"]
    assert not caplog.records  # not a row failure: nothing logged as one


def test_a_stop_exception_while_recording_a_failure_is_rolled_back_and_raised() -> None:
    tx = Tx()
    calls: list[str] = []

    def claim_next(seen: set[str]) -> Row | None:
        return next((Row(r) for r in ["a", "b"] if r not in seen), None)

    def resolve(claim: Row) -> bool:
        calls.append(f"resolve {claim.row_id}")
        raise RuntimeError("boom")

    def recover(claim: Row, exc: Exception) -> None:
        calls.append(f"recover {claim.row_id}")
        raise Stop("time is up")

    with pytest.raises(Stop):
        drain(
            tx,
            claim_next=claim_next,
            resolve=resolve,
            recover=recover,
            batch_size=100,
            log=logging.getLogger("test.claims"),
            failed="sync failed for",
            stops=(Stop,),
        )
    assert calls == ["resolve a", "recover a"]  # b never claimed
    assert tx.log == ["rollback", "rollback"]


def test_without_stops_a_stop_like_exception_is_only_that_rows_failure() -> None:
    done, _, resolved, _ = _run_plain(["a", "b", "c"], raising={"b"})
    assert done == Drained(checked=3, resolved=2) and resolved == ["a", "c"]


def _run_plain(rows: list[str], *, raising: set[str]) -> tuple[Drained, Tx, list[str], list[str]]:
    tx, resolved, recovered = Tx(), [], []

    def claim_next(seen: set[str]) -> Row | None:
        return next((Row(r) for r in rows if r not in seen), None)

    def resolve(claim: Row) -> bool:
        if claim.row_id in raising:
            raise Stop("time is up")
        resolved.append(claim.row_id)
        return True

    def recover(claim: Row, exc: Exception) -> None:
        recovered.append(claim.row_id)

    done = drain(
        tx,
        claim_next=claim_next,
        resolve=resolve,
        recover=recover,
        batch_size=100,
        log=logging.getLogger("test.claims"),
        failed="sync failed for",
    )
    return done, tx, resolved, recovered


def test_a_row_counts_as_resolved_only_once_its_commit_succeeded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The second commit is row b's: it raises, so b is a failure of its own (rolled back,
    # logged, recovered), not a resolved row.
    with caplog.at_level(logging.ERROR, logger="test.claims"):
        done, tx, _, recovered = _run(
            ["a", "b", "c"], bad=set(), unrecordable=set(), failing_commits={2}
        )
    assert done == Drained(checked=3, resolved=2)
    assert recovered == ["b"]
    assert tx.log == [
        "resolve a", "commit",
        "resolve b", "commit", "rollback", "recover b", "commit",
        "resolve c", "commit",
        "commit",
    ]  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == ["sync failed for b"]
