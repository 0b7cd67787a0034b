"""PSP adapters by name. A new PSP is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from config import Settings, get_settings
from worker.kernel.errors import ValidationError
from worker.psp.bank_transfer import BankTransfer
from worker.psp.base import PspAdapter
from worker.psp.braintree import BraintreeSandbox
from worker.psp.paypal import PaypalSandbox
from worker.psp.wechat_pay import WechatPaySandbox


# The real adapters are imported when first used: their SDKs (braintree, httpx) would cost
# every process about half a second at start-up, enabled or not.
def _braintree_gateway(settings: Settings) -> PspAdapter:
    from worker.psp.braintree_gateway import BraintreeAdapter

    return BraintreeAdapter(settings)


def _paypal_rest(settings: Settings) -> PspAdapter:
    from worker.psp.paypal_rest import PaypalRestAdapter

    return PaypalRestAdapter(settings)


def _check_braintree_gateway(settings: Settings) -> None:
    from worker.psp.braintree_gateway import check_settings

    check_settings(settings)


def _check_paypal_rest(settings: Settings) -> None:
    from worker.psp.paypal_rest import check_settings

    check_settings(settings)


ADAPTERS: dict[str, Callable[[Settings], PspAdapter]] = {
    "braintree": BraintreeSandbox,
    "paypal": PaypalSandbox,
    "bank_transfer": BankTransfer,
    "wechat_pay": WechatPaySandbox,
    "braintree_gateway": _braintree_gateway,
    "paypal_rest": _paypal_rest,
}
# Start-up checks of an adapter's own settings (credentials), run when PSP_ENABLED names it.
SETTINGS_CHECKS: dict[str, Callable[[Settings], None]] = {
    "braintree_gateway": _check_braintree_gateway,
    "paypal_rest": _check_paypal_rest,
}


def get_adapter(name: str, field: str = "psp") -> PspAdapter:
    settings = get_settings()
    if name not in ADAPTERS or name not in settings.psp_enabled:
        enabled = ", ".join(n for n in ADAPTERS if n in settings.psp_enabled)
        raise ValidationError(field, f"{name[:40]!r} is not an enabled PSP (enabled: {enabled})")
    return ADAPTERS[name](settings)


def check_enabled(settings: Settings) -> None:
    """Start-up check: every name in PSP_ENABLED has an adapter registered here, and the
    adapters it names have their settings (a missing credential stops start-up naming it)."""
    from config import SettingsError

    unknown = [n for n in settings.psp_enabled if n not in ADAPTERS]
    if unknown:
        raise SettingsError(
            f"PSP_ENABLED: unknown PSP {unknown[0]!r} (registered: {', '.join(ADAPTERS)})"
        )
    for name in settings.psp_enabled:
        check = SETTINGS_CHECKS.get(name)
        if check is not None:
            check(settings)
