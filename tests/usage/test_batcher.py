"""`worker.client.DebitBatcher` (issue 16): when it sends, what each caller gets back, and
its error, back-pressure and exit paths. The messages are answered in-process by the real
`debit_many` on PostgreSQL (a Celery app whose `send_task` runs the rule); the fleet test
(test_debits_fleet.py) sends through Redis to real workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.usage.test_usage import account_row, funded
from worker.client import BatcherClosed, BatcherFull, DebitBatcher
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import ValidationError
from worker.usage import batch

pytestmark = pytest.mark.integration


class _Sent:
    def __init__(self, reply: Any = None, error: BaseException | None = None) -> None:
        self.reply, self.error = reply, error

    def get(self, timeout: float | None = None) -> Any:
        if self.error is not None:
            raise self.error
        return self.reply


class InProcessApp(Celery):  # type: ignore[misc]
    """Answers `balance.usage.debit_many` with the real rule, in this process."""

    def __init__(self) -> None:
        super().__init__("batcher-test")
        self.messages: list[list[dict[str, Any]]] = []
        self.fail_send: BaseException | None = None
        self.fail_task: BaseException | None = None
        self.reply: Any = None
        self.mangle = False
        self.gate = threading.Event()
        self.gate.set()

    def send_task(self, name: str, kwargs: dict[str, Any] | None = None, **_: Any) -> _Sent:
        assert name == "balance.usage.debit_many"
        assert kwargs is not None
        if self.fail_send is not None:
            raise self.fail_send
        self.messages.append(kwargs["debits"])
        self.gate.wait(10)
        if self.fail_task is not None:
            return _Sent(error=self.fail_task)
        if self.reply is not None:
            return _Sent(self.reply)
        try:
            with unit_of_work() as uow:
                debits = [] if self.mangle else kwargs["debits"]
                return _Sent(batch.debit_many(uow, debits=debits, now=now()))
        except ValidationError as exc:
            return _Sent(error=exc)


def d(account_id: str, amount: str, reference: str) -> tuple[str, str, str]:
    return account_id, amount, reference


def test_full_batches_go_at_once_and_each_caller_gets_its_own_result() -> None:
    a = funded("10")
    app = InProcessApp()
    with DebitBatcher(app, max_batch=3, max_wait_ms=10_000) as batcher:
        futures = [batcher.submit(a, "1", f"m-{i}") for i in range(6)]
        results = [f.result(timeout=10) for f in futures]  # full batches: no 10 s wait
    assert [len(m) for m in app.messages] == [3, 3]
    assert [r["reference"] for r in results] == [f"m-{i}" for i in range(6)]
    assert [r["balance"] for r in results] == [f"{10 - i - 1}.00" for i in range(6)]
    assert {r["status"] for r in results} == {"ok"}


def test_a_partial_batch_goes_after_max_wait() -> None:
    a = funded("10")
    app = InProcessApp()
    with DebitBatcher(app, max_batch=500, max_wait_ms=50) as batcher:
        started = time.monotonic()
        result = batcher.submit(a, "1", "m-1").result(timeout=10)
        waited = time.monotonic() - started
    assert result["status"] == "ok"
    assert 0.04 <= waited < 5
    assert [len(m) for m in app.messages] == [1]


def test_flush_and_close_send_what_is_collected() -> None:
    a = funded("10")
    app = InProcessApp()
    batcher = DebitBatcher(app, max_batch=500, max_wait_ms=60_000)
    first = batcher.submit(a, "1", "m-1")
    batcher.flush()
    assert first.result(timeout=10)["status"] == "ok"
    later = [batcher.submit(a, "1", f"m-{i}") for i in range(2, 5)]
    batcher.close()  # sends the three and waits for their results
    assert all(f.done() for f in later)
    assert [f.result()["status"] for f in later] == ["ok"] * 3
    assert [len(m) for m in app.messages] == [1, 3]
    assert account_row(a).balance == Decimal("6")
    with pytest.raises(BatcherClosed):
        batcher.submit(a, "1", "m-9")
    batcher.close()  # twice is fine


def test_refused_debits_are_results_not_exceptions() -> None:
    a = funded("1")
    app = InProcessApp()
    with DebitBatcher(app, max_batch=3, max_wait_ms=10) as batcher:
        ok = batcher.submit(a, "1", "m-1")
        poor = batcher.submit(a, "1", "m-2")
        again = batcher.submit(a, "1", "m-1")
    assert ok.result()["status"] == "ok"
    assert poor.result()["error"]["code"] == "insufficient_funds"
    assert again.result()["status"] == "duplicate"


def test_a_send_failure_fails_every_future_of_that_message() -> None:
    a = funded("10")
    app = InProcessApp()
    app.fail_send = ConnectionError("broker down")
    with DebitBatcher(app, max_batch=2, max_wait_ms=10) as batcher:
        futures = [batcher.submit(a, "1", f"m-{i}") for i in range(3)]
        for f in futures:
            with pytest.raises(ConnectionError, match="broker down"):
                f.result(timeout=10)
        assert batcher.held == 0  # the failed debits no longer count against max_pending
        app.fail_send = None  # the caller may submit the same debits again: idempotent
        retried = [batcher.submit(a, "1", f"m-{i}") for i in range(3)]
        assert [f.result(timeout=10)["status"] for f in retried] == ["ok"] * 3
    assert account_row(a).balance == Decimal("7")


def test_a_task_error_fails_every_future_of_that_message() -> None:
    a = funded("10")
    app = InProcessApp()
    app.fail_task = TimeoutError("no result within result_timeout")
    with DebitBatcher(app, max_batch=2, max_wait_ms=10) as batcher:
        futures = [batcher.submit(a, "1", f"m-{i}") for i in range(2)]
        for f in futures:
            with pytest.raises(TimeoutError):
                f.result(timeout=10)
        app.fail_task = None
        app.reply = {"results": []}  # a reply that does not answer every debit
        odd = batcher.submit(a, "1", "m-9")
        with pytest.raises(RuntimeError, match="no result per debit"):
            odd.result(timeout=10)


def test_a_malformed_message_is_refused_whole_on_every_future() -> None:
    app = InProcessApp()
    with DebitBatcher(app, max_batch=2, max_wait_ms=10) as batcher:
        batcher.task_name = "balance.usage.debit_many"
        app.mangle = True  # the worker receives an empty list
        futures = [batcher.submit("acc_x", "1", f"m-{i}") for i in range(2)]
        for f in futures:
            with pytest.raises(ValidationError, match="debits"):
                f.result(timeout=10)


def test_memory_is_bounded_submit_blocks_then_refuses() -> None:
    a = funded("10")
    app = InProcessApp()
    app.gate.clear()  # the first message hangs in flight
    batcher = DebitBatcher(app, max_batch=2, max_pending=2, max_wait_ms=1, submit_timeout=0.2)
    held = [batcher.submit(a, "1", "m-1"), batcher.submit(a, "1", "m-2")]
    started = time.monotonic()
    with pytest.raises(BatcherFull):
        batcher.submit(a, "1", "m-3")
    assert time.monotonic() - started >= 0.19  # it blocked first
    app.gate.set()
    assert [f.result(timeout=10)["status"] for f in held] == ["ok", "ok"]
    assert batcher.submit(a, "1", "m-3").result(timeout=10)["status"] == "ok"
    batcher.close()


def test_a_cancelled_future_is_left_out_of_the_message() -> None:
    a = funded("10")
    app = InProcessApp()
    with DebitBatcher(app, max_batch=500, max_wait_ms=200) as batcher:
        keep = batcher.submit(a, "1", "m-1")
        drop: Future[dict[str, Any]] = batcher.submit(a, "1", "m-2")
        assert drop.cancel()
    assert keep.result()["status"] == "ok"
    assert app.messages == [[{"account_id": a, "amount": "1", "reference": "m-1"}]]


def test_debits_collected_at_interpreter_exit_are_sent(tmp_path: Path) -> None:
    """No close(), no `with`: the atexit hook flushes and waits."""
    a = funded("10")
    script = tmp_path / "exit.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            from tests.usage.test_batcher import InProcessApp
            from worker.client import DebitBatcher
            batcher = DebitBatcher(InProcessApp(), max_batch=500, max_wait_ms=60_000)
            for i in range(5):
                batcher.submit({a!r}, "1", f"exit-{{i}}")
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert account_row(a).balance == Decimal("5")
