"""WeChat Pay as a sandbox stub of its Native (QR code) payment: a charge creates an order and
answers `pending` with the QR code's content in `text` (`weixin://wxpay/bizpayurl?pr=...`, as
WeChat Pay's Native API returns `code_url`); the payer scans it later and the order completes
then, like a bank transfer completes when the money arrives. So it cannot be charged on demand
(`on_demand = False`): top-ups only, never auto-reload.

Who may use it (seeds 000/001, Nexmo's payment page, JA and ZH: "WeChat Pay (Australia, China,
Hong Kong, Indonesia, Malaysia, New Zealand, the Philippines and Taiwan only)"): accounts whose
country is in `ALLOWED_COUNTRIES`. The payment-methods service enforces it; this module only
states the set.

The stub keeps its orders on the stubs' remote side (`worker/psp/sandbox.py`), so a look-up from
another process finds them; `pay(key)` is the payer scanning and paying (tests, demos).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from config import Settings
from worker.kernel.clock import now
from worker.psp.base import (
    ChargeRequest,
    ChargeResult,
    Outcome,
    RefundRequest,
    RefundResult,
    VaultedMethod,
    VaultRequest,
)
from worker.psp.sandbox import RemoteSide

# Seeds 000/001 (Nexmo payments, JA/ZH): WeChat Pay only for these countries (ISO 3166-1).
ALLOWED_COUNTRIES = frozenset({"AU", "CN", "HK", "ID", "MY", "NZ", "PH", "TW"})
QR_PREFIX = "weixin://wxpay/bizpayurl?pr="
# A Native order's QR code is valid for 2 hours (WeChat Pay's default `time_expire`).
QR_EXPIRY = timedelta(hours=2)
EXPIRED = "the QR code expired unpaid"


class WechatPaySandbox:
    """PSP_ENABLED name `wechat_pay` (not enabled by default)."""

    name = "wechat_pay"
    on_demand = False
    polls_pending = True  # the janitor looks a pending order up until it is paid or closed
    allowed_countries = ALLOWED_COUNTRIES

    def __init__(self, settings: Settings) -> None:
        self.remote = RemoteSide(settings, self.name)

    def vault(self, request: VaultRequest) -> VaultedMethod:
        """Nothing to vault: each payment is a fresh QR code the payer scans."""
        return VaultedMethod(
            type="wechat_pay",
            token=f"wechat:{request.customer_ref}",
            fingerprint=None,
            display="WeChat Pay (QR code)",
        )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Create the order once per key: `pending`, its out_trade_no as `psp_reference` and
        `scan to pay: weixin://...` as `text` (the engine must hand that to the payer)."""
        digest = hashlib.sha256(request.idempotency_key.encode()).hexdigest()
        return self.remote.record(
            request,
            Outcome.PENDING,
            reference=f"wx{digest[:30]}",
            code="qr_code",
            text=f"scan to pay: {QR_PREFIX}{digest[30:40]}",
        )

    def lookup(self, idempotency_key: str) -> ChargeResult | None:
        """The order by our key: pending until paid, then succeeded (None if never created).
        An order unpaid `QR_EXPIRY` after it was made is closed (WeChat Pay's trade_state
        CLOSED, after the Native order's `time_expire`): `declined`, code `CLOSED`."""
        found = self.remote.lookup(idempotency_key)
        if (
            found is not None
            and found.outcome is Outcome.PENDING
            and found.processed_at is not None
            and now() - found.processed_at >= QR_EXPIRY
            and self.remote.complete(idempotency_key, Outcome.DECLINED, "CLOSED", EXPIRED)
        ):
            return ChargeResult(Outcome.DECLINED, found.psp_reference, "CLOSED", EXPIRED)
        return found

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a paid order by its reference, once per refund key."""
        return self.remote.refund(request)

    def pay(self, idempotency_key: str) -> bool:
        """Sandbox only: the payer scanned the QR code and paid. False if no pending order."""
        return self.remote.complete(idempotency_key, Outcome.SUCCEEDED)
