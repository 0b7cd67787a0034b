"""Start-up for the real adapters: a missing credential, a timeout too long for a charge's lease
or a bad PSP setting stops it with one line naming the setting, never echoing a secret; WeChat
Pay is registered, not enabled by default, and states the countries it is for."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings, SettingsError, get_settings, reset_settings
from worker.kernel.errors import ValidationError
from worker.psp import wechat_pay
from worker.psp.registry import ADAPTERS, check_enabled, get_adapter

PSP_NAMES = (
    "BRAINTREE_MERCHANT_ID",
    "BRAINTREE_PUBLIC_KEY",
    "BRAINTREE_PRIVATE_KEY",
    "BRAINTREE_ENVIRONMENT",
    "BRAINTREE_BASE_URL",
    "BRAINTREE_MERCHANT_ACCOUNTS",
    "PAYPAL_CLIENT_ID",
    "PAYPAL_CLIENT_SECRET",
    "PAYPAL_BASE_URL",
    "PSP_HTTP_TIMEOUT_SECONDS",
    "PSP_ENABLED",
)
BRAINTREE = {
    "BRAINTREE_MERCHANT_ID": "m1",
    "BRAINTREE_PUBLIC_KEY": "p1",
    "BRAINTREE_PRIVATE_KEY": "bt-private-9d2e",
}
PAYPAL = {"PAYPAL_CLIENT_ID": "c1", "PAYPAL_CLIENT_SECRET": "pp-secret-41aa"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No PSP setting from the machine (sandbox credentials may be there); settings reset."""
    monkeypatch.chdir(tmp_path)
    for name in PSP_NAMES:
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def _start_up(env: pytest.MonkeyPatch, **values: str) -> str | None:
    """What start-up says (celery: get_settings, then check_enabled); None when it starts."""
    for name, value in values.items():
        env.setenv(name, value)
    reset_settings()
    try:
        check_enabled(get_settings())
    except SettingsError as exc:
        message = str(exc)
        assert "\n" not in message
        return message
    return None


@pytest.mark.parametrize("missing", sorted(BRAINTREE))
def test_braintree_gateway_needs_each_credential(env: pytest.MonkeyPatch, missing: str) -> None:
    given = {k: v for k, v in BRAINTREE.items() if k != missing}
    message = _start_up(env, PSP_ENABLED="braintree,braintree_gateway", **given)
    assert message is not None and message.startswith(f"{missing}:")
    assert "braintree_gateway" in message
    assert "bt-private-9d2e" not in message


@pytest.mark.parametrize("missing", sorted(PAYPAL))
def test_paypal_rest_needs_each_credential(env: pytest.MonkeyPatch, missing: str) -> None:
    given = {k: v for k, v in PAYPAL.items() if k != missing}
    message = _start_up(env, PSP_ENABLED="paypal_rest", **given)
    assert message is not None and message.startswith(f"{missing}:")
    assert "pp-secret-41aa" not in message


def test_real_adapters_start_with_their_credentials(env: pytest.MonkeyPatch) -> None:
    assert (
        _start_up(env, PSP_ENABLED="braintree_gateway,paypal_rest", **BRAINTREE, **PAYPAL) is None
    )
    settings = get_settings()
    for secret in ("bt-private-9d2e", "pp-secret-41aa"):
        assert secret not in repr(settings) and secret not in settings.model_dump_json()


def test_stubs_need_no_credentials(env: pytest.MonkeyPatch) -> None:
    assert _start_up(env, PSP_ENABLED="braintree,paypal,bank_transfer,wechat_pay") is None


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"PSP_HTTP_TIMEOUT_SECONDS": "60"}, "PSP_HTTP_TIMEOUT_SECONDS"),  # 3 x 2 x 60 = 360
        ({"PSP_HTTP_TIMEOUT_SECONDS": "0"}, "PSP_HTTP_TIMEOUT_SECONDS"),
        ({"BRAINTREE_ENVIRONMENT": "staging"}, "BRAINTREE_ENVIRONMENT"),
        ({"BRAINTREE_BASE_URL": "ftp://127.0.0.1"}, "BRAINTREE_BASE_URL"),
        ({"BRAINTREE_MERCHANT_ACCOUNTS": "EUR"}, "BRAINTREE_MERCHANT_ACCOUNTS"),
        ({"BRAINTREE_MERCHANT_ACCOUNTS": "EURO=acme"}, "BRAINTREE_MERCHANT_ACCOUNTS"),
        ({"PAYPAL_BASE_URL": "api-m.paypal.com"}, "PAYPAL_BASE_URL"),
        (
            {"PSP_ENABLED": "braintree_gateway", "BRAINTREE_BASE_URL": "https://127.0.0.1:8443"},
            "BRAINTREE_BASE_URL",  # the SDK speaks TLS on port 443 only
        ),
    ],
)
def test_bad_psp_settings_are_refused_by_name(
    env: pytest.MonkeyPatch, values: dict[str, str], name: str
) -> None:
    message = _start_up(env, **BRAINTREE, **values)
    assert message is not None and message.startswith(f"{name}:"), message


def test_a_timeout_that_fits_the_lease_is_accepted(env: pytest.MonkeyPatch) -> None:
    assert _start_up(env, PSP_HTTP_TIMEOUT_SECONDS="59.5") is None
    assert get_settings().psp_http_timeout_seconds == 59.5
    assert get_settings().braintree_merchant_accounts == {}


def test_merchant_accounts_are_read_per_currency(env: pytest.MonkeyPatch) -> None:
    settings = Settings(BRAINTREE_MERCHANT_ACCOUNTS="eur=acme_eur, USD=acme-usd")  # type: ignore[call-arg]
    assert settings.braintree_merchant_accounts == {"EUR": "acme_eur", "USD": "acme-usd"}


def test_celery_start_up_stops_with_one_line_naming_the_missing_credential(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in PSP_NAMES}
    environment.update(PSP_ENABLED="braintree_gateway", BRAINTREE_MERCHANT_ID="m1")
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "report"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "BRAINTREE_PUBLIC_KEY" in lines[0]


def test_wechat_pay_is_registered_but_not_enabled_by_default(env: pytest.MonkeyPatch) -> None:
    assert "wechat_pay" in ADAPTERS
    with pytest.raises(ValidationError) as refused:
        get_adapter("wechat_pay")
    assert refused.value.field == "psp"
    env.setenv("PSP_ENABLED", "braintree,wechat_pay")
    reset_settings()
    adapter = get_adapter("wechat_pay")
    assert adapter.on_demand is False


def test_wechat_pay_states_the_seed_countries() -> None:
    # Seeds 000/001: Australia, China, Hong Kong, Indonesia, Malaysia, New Zealand, the
    # Philippines and Taiwan only.
    assert (
        frozenset({"AU", "CN", "HK", "ID", "MY", "NZ", "PH", "TW"}) == wechat_pay.ALLOWED_COUNTRIES
    )
