"""PSP adapters by name. A new PSP is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from config import Settings, get_settings
from worker.kernel.errors import ValidationError
from worker.psp.bank_transfer import BankTransfer
from worker.psp.base import PspAdapter
from worker.psp.braintree import BraintreeSandbox
from worker.psp.paypal import PaypalSandbox

ADAPTERS: dict[str, Callable[[Settings], PspAdapter]] = {
    "braintree": BraintreeSandbox,
    "paypal": PaypalSandbox,
    "bank_transfer": BankTransfer,
}


def get_adapter(name: str, field: str = "psp") -> PspAdapter:
    settings = get_settings()
    if name not in ADAPTERS or name not in settings.psp_enabled:
        enabled = ", ".join(n for n in ADAPTERS if n in settings.psp_enabled)
        raise ValidationError(field, f"{name[:40]!r} is not an enabled PSP (enabled: {enabled})")
    return ADAPTERS[name](settings)


def check_enabled(settings: Settings) -> None:
    """Start-up check: every name in PSP_ENABLED has an adapter registered here."""
    from config import SettingsError

    unknown = [n for n in settings.psp_enabled if n not in ADAPTERS]
    if unknown:
        raise SettingsError(
            f"PSP_ENABLED: unknown PSP {unknown[0]!r} (registered: {', '.join(ADAPTERS)})"
        )
