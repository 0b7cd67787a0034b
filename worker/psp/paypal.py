"""PayPal billing agreements as the sandbox behaves: charges follow the same amount table."""

from __future__ import annotations

from config import Settings
from worker.psp.base import VaultedMethod, VaultRequest
from worker.psp.braintree import BraintreeSandbox, paypal_account
from worker.psp.errors import VaultRefused
from worker.psp.sandbox import PAYPAL_NONCE, RemoteSide, parse_nonce, refuse_special_nonces


class PaypalSandbox(BraintreeSandbox):
    name = "paypal"
    on_demand = True

    def __init__(self, settings: Settings) -> None:
        self.remote = RemoteSide(settings, self.name)

    def vault(self, request: VaultRequest) -> VaultedMethod:
        nonce = parse_nonce(request.nonce)
        refuse_special_nonces(nonce)
        if nonce.base != PAYPAL_NONCE:
            raise VaultRefused("paypal_nonce", f"PayPal needs {PAYPAL_NONCE}[:<tag>]")
        return paypal_account(nonce.tag)
