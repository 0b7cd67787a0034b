"""The WeChat Pay stub: a QR-code order that waits for the payer, found by its key from any
process, paid later, refundable once paid; closed unpaid when its QR code expires."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import time_machine

from config import Settings
from worker.psp.base import ChargeRequest, Outcome, RefundRequest, VaultRequest
from worker.psp.wechat_pay import QR_EXPIRY, QR_PREFIX, WechatPaySandbox


def _adapter() -> WechatPaySandbox:
    return WechatPaySandbox(Settings())


def test_a_charge_is_a_qr_code_that_waits_for_the_payer() -> None:
    adapter, key = _adapter(), f"wx-{uuid.uuid4().hex}"
    method = adapter.vault(VaultRequest("", "acc_1"))
    assert (method.type, method.fingerprint) == ("wechat_pay", None)
    order = adapter.charge(ChargeRequest(key, method.token, 10000, "CNY", "top_up"))
    assert order.outcome is Outcome.PENDING
    assert order.text is not None and order.text.startswith(f"scan to pay: {QR_PREFIX}")
    assert order.psp_reference and order.psp_reference.startswith("wx")
    # Another process (a fresh adapter) finds the same order, with its QR code.
    assert _adapter().charge(ChargeRequest(key, method.token, 10000, "CNY", "top_up")) == order
    found = _adapter().lookup(key)
    assert found is not None
    assert (found.outcome, found.psp_reference, found.text) == (
        order.outcome,
        order.psp_reference,
        order.text,
    )


def test_the_payer_pays_later_and_only_once() -> None:
    adapter, key = _adapter(), f"wx-{uuid.uuid4().hex}"
    order = adapter.charge(ChargeRequest(key, "wechat:acc_1", 10000, "CNY", "top_up"))
    pending = adapter.lookup(key)
    assert pending is not None and pending.processed_at is not None
    order_seen = pending.processed_at
    assert adapter.pay(key)
    assert not adapter.pay(key)
    paid = adapter.lookup(key)
    assert paid is not None
    assert (paid.outcome, paid.psp_reference) == (Outcome.SUCCEEDED, order.psp_reference)
    assert paid.processed_at is not None and paid.processed_at >= order_seen
    assert not adapter.pay(f"wx-{uuid.uuid4().hex}")  # no such order


def test_only_a_paid_order_is_refunded() -> None:
    adapter, key = _adapter(), f"wx-{uuid.uuid4().hex}"
    order = adapter.charge(ChargeRequest(key, "wechat:acc_1", 10000, "CNY", "top_up"))
    assert order.psp_reference is not None
    unpaid = adapter.refund(RefundRequest(f"rf-{key}", order.psp_reference, 10000, "CNY"))
    assert unpaid.outcome is Outcome.DECLINED
    adapter.pay(key)
    paid = adapter.refund(RefundRequest(f"rf2-{key}", order.psp_reference, 10000, "CNY"))
    assert paid.outcome is Outcome.SUCCEEDED


def test_an_order_unpaid_when_its_qr_code_expires_is_closed() -> None:
    adapter, key = _adapter(), f"wx-{uuid.uuid4().hex}"
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        adapter.charge(ChargeRequest(key, "wechat:acc_1", 10000, "CNY", "top_up"))
    with time_machine.travel(start + QR_EXPIRY - timedelta(seconds=1), tick=False):
        still = adapter.lookup(key)
    assert still is not None and still.outcome is Outcome.PENDING
    with time_machine.travel(start + QR_EXPIRY, tick=False):
        closed = adapter.lookup(key)
        assert not adapter.pay(key)  # too late: the payer's scan finds it closed
        again = _adapter().lookup(key)
    assert closed is not None and (closed.outcome, closed.code) == (Outcome.DECLINED, "CLOSED")
    assert again is not None and (again.outcome, again.code) == (Outcome.DECLINED, "CLOSED")
