"""Refunds whose answer was lost, resolved by the janitor's look-up (never a second
refund), and the credit note every refund issues (CN-YYYY-NNNNNN, gap-free, naming the
invoice it corrects), against real PostgreSQL (issue 14)."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from pypdf import PdfReader

from config import reset_settings
from tests.invoices import support as s
from tests.refunds import support as r
from worker.db.session import unit_of_work
from worker.invoices import pdf
from worker.kernel.clock import now
from worker.refunds import janitor, service

pytestmark = pytest.mark.integration


@pytest.fixture
def lost_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The sandbox refunds 7.77, then the answer is lost on the way back."""
    monkeypatch.setenv("PSP_STUB_TIMEOUT_AMOUNTS", "7.77")
    reset_settings()
    yield
    monkeypatch.delenv("PSP_STUB_TIMEOUT_AMOUNTS")
    reset_settings()


def _sync(moment: object) -> janitor.SyncResult:
    with unit_of_work() as uow:
        return janitor.sync_pending(uow, moment)  # type: ignore[arg-type]


@pytest.mark.usefixtures("lost_answers")
def test_an_unknown_outcome_is_resolved_by_the_janitor_never_by_refunding_again() -> None:
    account_id, charge_id = r.card_account("50.00")
    key = f"lost-{uuid.uuid4().hex}"
    pending = r.refund(charge_id, "7.77", key=key)
    assert pending["status"] == "pending" and pending["failure_code"] == "timeout"
    assert pending["balance"] == "42.23"  # taken at creation: it cannot be spent meanwhile
    assert r.remote_refunds(key) == 1
    assert _sync(now()) == {"checked": 0, "resolved": 0}  # the first look-up is a minute on
    assert _sync(now() + timedelta(minutes=2)) == {"checked": 1, "resolved": 1}
    [row] = r.rows(charge_id)
    assert row.status == "succeeded" and row.credit_note_id is not None
    assert r.remote_refunds(key) == 1  # looked up, not refunded again
    assert _sync(now() + timedelta(minutes=30)) == {"checked": 0, "resolved": 0}
    assert s.get_account(account_id).balance == Decimal("42.23")
    assert len(s.events("refund.succeeded")) == 1
    s.audit_ok()


@pytest.mark.usefixtures("lost_answers")
def test_a_repeated_request_for_a_lost_answer_looks_it_up() -> None:
    _, charge_id = r.card_account("50.00")
    key = f"lost-{uuid.uuid4().hex}"
    assert r.refund(charge_id, "7.77", key=key)["status"] == "pending"
    again = r.refund(charge_id, "7.77", key=key)
    assert again["status"] == "succeeded"
    assert r.remote_refunds(key) == 1
    s.audit_ok()


def test_a_refund_the_psp_never_received_fails_after_its_lease_and_the_money_returns() -> None:
    account_id, charge_id = r.card_account("30.00")
    with unit_of_work() as uow:  # the worker died between the commit and the PSP call
        row, must_call = service.begin(
            uow, charge_id=charge_id, amount="12.00", idempotency_key="never-sent", now=now()
        )
        assert must_call
    assert s.get_account(account_id).balance == Decimal("18.00")
    assert _sync(now() + timedelta(minutes=2)) == {"checked": 0, "resolved": 0}  # lease holds
    later = now() + timedelta(minutes=10)
    with time_machine.travel(later, tick=False):
        assert _sync(later) == {"checked": 1, "resolved": 1}
    [failed] = r.rows(charge_id)
    assert (failed.status, failed.failure_code) == ("failed", "not_received")
    assert s.get_account(account_id).balance == Decimal("30.00")
    assert r.remote_refunds("never-sent") == 0
    [event] = s.events("refund.failed")
    assert event.data["refund_id"] == row.id
    s.audit_ok()


def test_each_refund_issues_a_gap_free_credit_note_naming_the_invoice() -> None:
    account_id, charge_id = r.card_account("3500.00", psp="paypal", nonce=r.PAYPAL)
    [final] = s.invoices_of(account_id)
    first = r.refund(charge_id, "100.00")
    declined = r.refund(charge_id, "2000.00")  # declined: no credit note, no number taken
    second = r.refund(charge_id, "50.00")
    assert declined["status"] == "failed"
    notes = [i for i in s.invoices_of(account_id) if i.kind == "credit_note"]
    year = now().year
    assert [n.number for n in notes] == [f"CN-{year}-000001", f"CN-{year}-000002"]
    assert [n.amount for n in notes] == [Decimal("100.00"), Decimal("50.00")]
    assert {n.corrects for n in notes} == {final.id}
    assert [n.payment_reference for n in notes] == [first["refund_id"], second["refund_id"]]
    assert first["credit_note_id"] == notes[0].id
    assert all(n.status == "issued" and n.charge_id == charge_id for n in notes)
    mails = s.mails("invoice.credit_note")
    assert len(mails) == 2 and final.number in mails[0].text_body
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.render(notes[0]))).pages)
    assert f"CN-{year}-000001" in text and str(final.number) in text
    s.audit_ok()


def test_a_card_refund_issues_the_pending_final_invoice_first_and_mails_in_japanese() -> None:
    account_id, charge_id = r.card_account("40.00", locale="ja")
    [pending] = s.invoices_of(account_id)
    assert pending.status == "pending" and pending.number is None
    r.refund(charge_id, "10.00")
    final, note = s.invoices_of(account_id)
    assert final.status == "issued" and final.number == f"INV-{now().year}-000001"
    assert note.kind == "credit_note" and note.corrects == final.id
    [mail] = s.mails("invoice.credit_note")
    assert "クレジットノート" in mail.subject and final.number in mail.text_body


@pytest.mark.usefixtures("lost_answers")
def test_the_janitor_asks_with_the_charges_psp_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PSP that keeps refunds under their payment (PayPal: the capture's order) is asked
    through the refunded charge's reference, so the janitor hands it over with the key."""
    _, charge_id = r.card_account("50.00")
    key = f"lost-{uuid.uuid4().hex}"
    assert r.refund(charge_id, "7.77", key=key)["status"] == "pending"
    real = janitor.get_adapter("braintree")
    asked: list[tuple[str, str | None]] = []

    class Recording:
        def lookup_refund(self, idempotency_key: str, charge_reference: str | None = None) -> Any:
            asked.append((idempotency_key, charge_reference))
            return real.lookup_refund(idempotency_key, charge_reference)  # type: ignore[attr-defined]

    monkeypatch.setattr(janitor, "get_adapter", lambda name: Recording())
    assert _sync(now() + timedelta(minutes=2)) == {"checked": 1, "resolved": 1}
    assert asked == [(key, r.charge(charge_id).psp_reference)]
    assert r.charge(charge_id).psp_reference


@pytest.fixture
def attention_after_two(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PAYMENT_SYNC_ATTENTION_AFTER", "2")
    reset_settings()
    yield
    monkeypatch.delenv("PAYMENT_SYNC_ATTENTION_AFTER")
    reset_settings()


@pytest.mark.usefixtures("lost_answers", "attention_after_two")
def test_a_refund_whose_sync_keeps_raising_is_isolated_backed_off_and_flagged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every failure path ends: a refund the janitor cannot apply (a bug, a constraint) is
    rolled back alone, backed off, and an operator is told once; the money stays taken."""
    account_id, charge_id = r.card_account("50.00")
    key = f"lost-{uuid.uuid4().hex}"
    assert r.refund(charge_id, "7.77", key=key)["status"] == "pending"

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    mended = janitor.service.apply
    monkeypatch.setattr(janitor.service, "apply", broken)
    moment = now() + timedelta(minutes=2)
    flagged = []
    for _ in range(3):
        assert _sync(moment) == {"checked": 1, "resolved": 0}
        assert _sync(moment) == {"checked": 0, "resolved": 0}  # backed off by its claim
        flagged.append(r.rows(charge_id)[0].needs_attention)
        moment += timedelta(days=2)
    assert flagged == [False, True, True]  # at PAYMENT_SYNC_ATTENTION_AFTER (2), not before
    [row] = r.rows(charge_id)
    assert (row.status, row.needs_attention) == ("pending", True)
    [event] = s.events("refund.needs_attention")
    assert event.data["refund_id"] == row.id
    assert event.data["reason"] == "sync error: RuntimeError: boom"
    assert s.get_account(account_id).balance == Decimal("42.23")
    monkeypatch.setattr(janitor.service, "apply", mended)  # the next look-up applies it
    assert _sync(moment) == {"checked": 1, "resolved": 1}
    assert r.rows(charge_id)[0].status == "succeeded"
    assert r.remote_refunds(key) == 1
    s.audit_ok()


@pytest.mark.usefixtures("lost_answers", "attention_after_two")
def test_a_refund_whose_look_ups_never_complete_still_raises_attention() -> None:
    """Claimed again and again by janitors that die before asking: flagged all the same."""
    _, charge_id = r.card_account("50.00")
    assert r.refund(charge_id, "7.77", key=f"lost-{uuid.uuid4().hex}")["status"] == "pending"
    moment = now() + timedelta(minutes=2)
    flagged = []
    for _ in range(4):  # claim, then "crash" (no look-up, no apply)
        with unit_of_work() as uow:
            claim = janitor.claim_next(uow, moment, set())
        assert claim is not None and claim.refund_id == r.rows(charge_id)[0].id
        flagged.append(r.rows(charge_id)[0].needs_attention)
        moment += timedelta(days=2)
    # Claims 1 and 2 are look-ups that may still come back; the third is past the bound.
    assert flagged == [False, False, True, True]
    [row] = r.rows(charge_id)
    assert (row.status, row.needs_attention) == ("pending", True)
    [event] = s.events("refund.needs_attention")  # once, not at every later claim
    assert event.data["reason"] == "look-ups never completed"


@pytest.mark.usefixtures("lost_answers", "attention_after_two")
def test_a_key_error_while_asking_is_a_failure_logged_with_its_traceback_not_swallowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a PSP that cannot look refunds up is an expected answer: a KeyError raised while
    asking (an answer read wrongly) is the loop's failure: logged at ERROR with its
    traceback, backed off and counted towards attention."""
    _, charge_id = r.card_account("50.00")
    assert r.refund(charge_id, "7.77", key=f"lost-{uuid.uuid4().hex}")["status"] == "pending"

    class Broken:
        def lookup_refund(self, idempotency_key: str, charge_reference: str | None = None) -> Any:
            return {}["status"]

    monkeypatch.setattr(janitor, "get_adapter", lambda name: Broken())
    refund_id = r.rows(charge_id)[0].id
    moment = now() + timedelta(minutes=2)
    with caplog.at_level(logging.ERROR, logger=janitor.log.name):
        assert _sync(moment) == {"checked": 1, "resolved": 0}
        assert _sync(moment + timedelta(days=2)) == {"checked": 1, "resolved": 0}
    failed = f"refund sync failed for {refund_id}"
    failures = [x for x in caplog.records if x.getMessage() == failed]
    assert len(failures) == 2 and all(x.exc_info is not None for x in failures)
    assert failures[0].exc_info is not None and failures[0].exc_info[0] is KeyError
    [row] = r.rows(charge_id)
    assert (row.status, row.needs_attention) == ("pending", True)
    [event] = s.events("refund.needs_attention")
    assert event.data["reason"] == "sync error: KeyError: 'status'"


@pytest.mark.usefixtures("lost_answers", "attention_after_two")
def test_a_psp_that_cannot_look_refunds_up_is_told_to_an_operator_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, charge_id = r.card_account("50.00")
    assert r.refund(charge_id, "7.77", key=f"lost-{uuid.uuid4().hex}")["status"] == "pending"

    class NoRefundLookUps:
        pass

    monkeypatch.setattr(janitor, "get_adapter", lambda name: NoRefundLookUps())
    moment = now() + timedelta(minutes=2)
    with caplog.at_level(logging.ERROR, logger=janitor.log.name):
        assert _sync(moment) == {"checked": 1, "resolved": 0}
        assert _sync(moment + timedelta(days=2)) == {"checked": 1, "resolved": 0}
    assert not [x for x in caplog.records if x.exc_info is not None]  # an answer, not a crash
    [row] = r.rows(charge_id)
    assert (row.status, row.needs_attention) == ("pending", True)
    [event] = s.events("refund.needs_attention")
    assert event.data["reason"] == (
        "look-up failed: braintree cannot look refunds up: an operator must check"
    )
