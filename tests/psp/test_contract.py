"""The adapter contract: what the charge engine relies on, passed by every adapter alike (the
sandbox stubs, and the real Braintree and PayPal adapters against fakes of their HTTP APIs).

- vault: a token, and the same card or PayPal payer -> the same fingerprint;
- a key is charged once, however often it is sent;
- an answer lost after the PSP acted is `unknown`, and a look-up by the key finds the charge;
- a decline is `declined` and takes nothing; a soft failure is `not_attempted`, takes nothing,
  and leaves nothing to find; no connection at all is `not_attempted`;
- a charge that needs the cardholder (2099.00) is `requires_action`, takes nothing, and a
  look-up finds it so;
- a refund is made once per refund key, never beyond what was charged;
- a refund whose answer was lost is `unknown`, and an adapter that `LooksUpRefunds` finds it
  by its key (and the charge's reference), made once; a key never sent is not found.

Adapters that cannot be charged on demand (bank transfer, WeChat Pay) skip, by name, what
they cannot do.
"""

from __future__ import annotations

import uuid

import pytest

from tests.psp.conftest import (
    ADAPTERS,
    DECLINE,
    LOST,
    NEEDS_ACTION,
    OK,
    SOFT,
    Harness,
    key,
    succeeded_or_pending,
)
from worker.psp.base import (
    ChargeRequest,
    LooksUpRefunds,
    Outcome,
    RefundRequest,
    VaultRequest,
)
from worker.psp.errors import TransportError, VaultRefused, VaultUnavailable
from worker.psp.registry import ADAPTERS as REGISTERED


def _request(idempotency_key: str, token: str, amount_minor: int) -> ChargeRequest:
    return ChargeRequest(idempotency_key, token, amount_minor, "EUR", "top_up contract")


def _method_token(h: Harness, tag: str = "") -> str:
    customer = f"acc_{uuid.uuid4().hex[:12]}"
    return h.adapter.vault(VaultRequest(h.instrument(tag or uuid.uuid4().hex[:8]), customer)).token


def _need_on_demand(h: Harness, why: str) -> None:
    if not h.adapter.on_demand:
        pytest.skip(f"{h.name} is not charged on demand: {why}")


def test_every_registered_adapter_runs_the_contract() -> None:
    assert sorted(ADAPTERS) == sorted(REGISTERED)


def test_vault_gives_a_token_and_one_fingerprint_per_instrument(harness: Harness) -> None:
    h = harness
    customer = f"acc_{uuid.uuid4().hex[:12]}"
    alice = h.adapter.vault(VaultRequest(h.instrument("alice"), customer))
    assert alice.token
    assert alice.display
    assert alice.type in ("card", "paypal", "bank_transfer", "wechat_pay")
    if alice.type not in ("card", "paypal"):
        assert alice.fingerprint is None  # nothing identifies a payer ahead of payment
        return
    again = h.adapter.vault(VaultRequest(h.instrument("alice"), f"acc_{uuid.uuid4().hex[:12]}"))
    bob = h.adapter.vault(VaultRequest(h.instrument("bob"), customer))
    assert alice.fingerprint is not None
    assert again.fingerprint == alice.fingerprint
    assert bob.fingerprint != alice.fingerprint
    if alice.type == "paypal":
        assert alice.payer_email
    else:
        assert alice.brand and alice.last4 and alice.expiry


def test_vault_refuses_what_the_psp_refuses(harness: Harness) -> None:
    h = harness
    if h.refused_nonce is None:
        pytest.skip(f"{h.name} vaults no instrument, so it has nothing to refuse")
    with pytest.raises(VaultRefused) as refused:
        h.adapter.vault(VaultRequest(h.refused_nonce, f"acc_{uuid.uuid4().hex[:12]}"))
    assert refused.value.code
    assert not isinstance(refused.value, VaultUnavailable)


def test_a_key_is_charged_once(harness: Harness) -> None:
    h = harness
    token, k = _method_token(h), key()
    first = h.adapter.charge(_request(k, token, OK))
    second = h.adapter.charge(_request(k, token, OK))
    assert first.outcome is succeeded_or_pending(h.adapter)
    assert first.psp_reference
    assert (second.outcome, second.psp_reference) == (first.outcome, first.psp_reference)
    if h.taken is not None:
        assert h.taken(k) == 1


def test_a_timeout_after_sending_is_unknown_and_the_lookup_finds_the_charge(
    harness: Harness,
) -> None:
    h = harness
    _need_on_demand(h, "nothing is sent that could be taken while its answer is lost")
    token, k = _method_token(h), key()
    lost = h.adapter.charge(_request(k, token, LOST))
    assert lost.outcome is Outcome.UNKNOWN  # never not_attempted: the PSP may have acted
    found = h.adapter.lookup(k)
    assert found is not None
    assert found.outcome is Outcome.SUCCEEDED
    assert found.psp_reference
    assert found.processed_at is not None and found.processed_at.tzinfo is not None
    assert h.taken is not None and h.taken(k) == 1


def test_lookup_of_a_key_never_sent_is_none(harness: Harness) -> None:
    assert harness.adapter.lookup(key()) is None


def test_a_pending_payment_is_found_by_its_key(harness: Harness) -> None:
    h = harness
    if h.adapter.on_demand:
        pytest.skip(f"{h.name} answers at once: covered by the lost-answer test")
    if h.taken is None:
        pytest.skip(f"{h.name}: the bank tells us through reconciliation, not by look-up")
    token, k = _method_token(h), key()
    charged = h.adapter.charge(_request(k, token, OK))
    found = h.adapter.lookup(k)
    assert found is not None
    assert (found.outcome, found.psp_reference) == (Outcome.PENDING, charged.psp_reference)


def test_a_decline_takes_nothing(harness: Harness) -> None:
    h = harness
    _need_on_demand(h, "a QR-code or bank payment is not declined when it is asked for")
    token, k = _method_token(h), key()
    declined = h.adapter.charge(_request(k, token, DECLINE))
    assert declined.outcome is Outcome.DECLINED
    assert declined.code == h.decline_code
    assert declined.text
    again = h.adapter.charge(_request(k, token, DECLINE))
    assert again.outcome is Outcome.DECLINED
    assert h.taken is not None and h.taken(k) == 0


def test_a_soft_failure_is_not_attempted_and_leaves_nothing(harness: Harness) -> None:
    h = harness
    _need_on_demand(h, "it has no processor to be unavailable at charge time")
    token, k = _method_token(h), key()
    soft = h.adapter.charge(_request(k, token, SOFT))
    assert soft.outcome is Outcome.NOT_ATTEMPTED
    assert h.adapter.lookup(k) is None  # nothing to find: a retry with the key is safe
    assert h.taken is not None and h.taken(k) == 0


def test_no_connection_is_not_attempted(harness: Harness) -> None:
    h = harness
    if h.unreachable is None:
        pytest.skip(f"{h.name} is a stub without a network")
    token, k = _method_token(h), key()
    down = h.unreachable()
    result = down.charge(_request(k, token, OK))
    assert result.outcome is Outcome.NOT_ATTEMPTED
    with pytest.raises(TransportError):
        down.lookup(k)
    with pytest.raises(VaultUnavailable):
        down.vault(VaultRequest(h.instrument("carol"), f"acc_{uuid.uuid4().hex[:12]}"))
    assert h.taken is not None and h.taken(k) == 0


def test_a_charge_needing_the_cardholder_requires_action(harness: Harness) -> None:
    h = harness
    _need_on_demand(h, "the payer acts anyway")
    token, k = _method_token(h), key()
    result = h.adapter.charge(_request(k, token, NEEDS_ACTION))
    assert result.outcome is Outcome.REQUIRES_ACTION
    assert result.code and result.text
    found = h.adapter.lookup(k)
    assert found is not None and found.outcome is Outcome.REQUIRES_ACTION
    assert h.taken is not None and h.taken(k) == 0


def test_a_refund_is_made_once_per_key_and_never_beyond_the_charge(harness: Harness) -> None:
    h = harness
    if h.taken is None:
        pytest.skip(f"{h.name}: bank transfers are refunded by hand")
    token, k = _method_token(h), key()
    charged = h.adapter.charge(_request(k, token, OK))
    assert charged.psp_reference is not None
    first_key = key()
    if not h.adapter.on_demand:  # the payer has not paid yet: nothing to refund
        unpaid = h.adapter.refund(RefundRequest(first_key, charged.psp_reference, OK, "EUR"))
        assert unpaid.outcome is Outcome.DECLINED
        first_key = key()
        assert h.adapter.pay(k)  # the payer scans and pays
    h.settle(charged.psp_reference)
    refund = RefundRequest(first_key, charged.psp_reference, OK, "EUR")
    first = h.adapter.refund(refund)
    assert first.outcome is Outcome.SUCCEEDED
    assert first.psp_reference
    repeat = h.adapter.refund(refund)
    assert (repeat.outcome, repeat.psp_reference) == (Outcome.SUCCEEDED, first.psp_reference)
    beyond = h.adapter.refund(RefundRequest(key(), charged.psp_reference, 1, "EUR"))
    assert beyond.outcome is Outcome.DECLINED
    nowhere = h.adapter.refund(RefundRequest(key(), "NOSUCHCHARGE123", OK, "EUR"))
    assert nowhere.outcome is Outcome.DECLINED


def test_a_refund_whose_answer_was_lost_is_found_by_its_key(harness: Harness) -> None:
    h = harness
    _need_on_demand(h, "the lost-refund case runs on the adapters charged on demand")
    adapter = h.adapter
    if not isinstance(adapter, LooksUpRefunds):
        pytest.skip(f"{h.name} cannot look refunds up")
    token, k = _method_token(h), key()
    charged = h.adapter.charge(_request(k, token, LOST * 2))
    assert charged.outcome is Outcome.SUCCEEDED and charged.psp_reference
    h.settle(charged.psp_reference)
    assert adapter.lookup_refund(key(), charged.psp_reference) is None  # never sent
    refund_key = key()
    lost = h.adapter.refund(RefundRequest(refund_key, charged.psp_reference, LOST, "EUR"))
    assert lost.outcome is Outcome.UNKNOWN  # made at the PSP, the answer came too late
    found = adapter.lookup_refund(refund_key, charged.psp_reference)
    assert found is not None
    assert found.outcome is Outcome.SUCCEEDED and found.psp_reference
    # Only the one refund was made: the rest of the charge (less a cent) is still there.
    rest = h.adapter.refund(RefundRequest(key(), charged.psp_reference, LOST - 1, "EUR"))
    assert rest.outcome is Outcome.SUCCEEDED
    beyond = h.adapter.refund(RefundRequest(key(), charged.psp_reference, 2, "EUR"))
    assert beyond.outcome is Outcome.DECLINED
