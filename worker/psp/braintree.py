"""Braintree (cards and PayPal via Braintree) as its sandbox behaves: nonces and amounts."""

from __future__ import annotations

import uuid

from config import Settings
from worker.psp.base import (
    ChargeRequest,
    ChargeResult,
    Outcome,
    RefundRequest,
    RefundResult,
    VaultedMethod,
    VaultRequest,
)
from worker.psp.errors import TransportError, VaultRefused
from worker.psp.sandbox import (
    CARD_NONCES,
    PAYPAL_NONCE,
    RemoteSide,
    fingerprint,
    parse_nonce,
    refuse_special_nonces,
)


def paypal_account(tag: str) -> VaultedMethod:
    email = f"sandbox-payer+{tag}@example.com" if tag else "sandbox-payer@example.com"
    return VaultedMethod(
        type="paypal",
        token=f"ba_{uuid.uuid4().hex[:20]}",
        fingerprint=fingerprint("paypal", tag),
        display=f"PayPal {email}",
        payer_email=email,
    )


class BraintreeSandbox:
    name = "braintree"
    on_demand = True

    def __init__(self, settings: Settings) -> None:
        self.remote = RemoteSide(settings, self.name)

    def vault(self, request: VaultRequest) -> VaultedMethod:
        nonce = parse_nonce(request.nonce)
        refuse_special_nonces(nonce)
        if nonce.base == PAYPAL_NONCE:
            return paypal_account(nonce.tag)
        card = CARD_NONCES.get(nonce.base)
        if card is None:
            raise VaultRefused("91565", "unknown payment method nonce")
        brand, last4 = card
        return VaultedMethod(
            type="card",
            token=f"bt_{uuid.uuid4().hex[:20]}",
            fingerprint=fingerprint("card", nonce.base, nonce.tag),
            display=f"{brand} ending {last4}",
            brand=brand,
            last4=last4,
            expiry="12/2030",
        )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        try:
            return self.remote.charge(request)
        except TransportError as exc:
            if exc.sent:
                return ChargeResult(Outcome.UNKNOWN, None, "timeout", str(exc))
            return ChargeResult(Outcome.NOT_ATTEMPTED, None, "unreachable", str(exc))

    def lookup(self, idempotency_key: str) -> ChargeResult | None:
        return self.remote.lookup(idempotency_key)

    def refund(self, request: RefundRequest) -> RefundResult:
        # The charge by its reference (as a PSP refunds a transaction id), once per refund key.
        try:
            return self.remote.refund(request)
        except TransportError as exc:
            if exc.sent:
                return RefundResult(Outcome.UNKNOWN, None, "timeout", str(exc))
            return RefundResult(Outcome.NOT_ATTEMPTED, None, "unreachable", str(exc))

    def lookup_refund(
        self, idempotency_key: str, charge_reference: str | None = None
    ) -> RefundResult | None:
        """The sandbox's record of the refund with this key (None: never received)."""
        return self.remote.lookup_refund(idempotency_key, charge_reference)
