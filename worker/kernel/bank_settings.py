"""Parsers of the invoice and bank-transfer settings (BANK_ACCOUNTS, BANK_TRANSFER_TOLERANCE,
INVOICE_ISSUER, INVOICE_TIMEZONE) and the ISO 11649 creditor reference.

Pure functions over strings, so the start-up check (config/settings.py) and the domains
(worker/invoices, worker/bank) read a setting the same way. Each raises ValueError whose
message says what is wrong; the settings loader prefixes the setting's name.

IBAN, BIC and the RF creditor reference are checked with python-stdnum (`stdnum.iban`,
`stdnum.bic`, `stdnum.iso11649`, `stdnum.iso7064.mod_97_10`), the kept implementation of
ISO 13616, ISO 9362 and ISO 11649.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# python-stdnum is imported where it is used (about 50 ms, with its IBAN registry): every
# command reads settings, and only BANK_ACCOUNTS or a payment reference needs it.
from worker.kernel.money import AMOUNT_RE, is_currency

# Sandbox defaults: the standard example IBANs (ISO 13616 / ECBS), never a real account.
SANDBOX_BANK_ACCOUNTS = [
    {
        "currency": "EUR",
        "beneficiary": "Balance Worker Ltd (sandbox)",
        "iban": "DE89370400440532013000",
        "bic": "COBADEFFXXX",
        "bank_name": "Sandbox Bank EUR",
    },
    {
        "currency": "USD",
        "beneficiary": "Balance Worker Ltd (sandbox)",
        "iban": "GB33BUKB20201555555555",
        "bic": "BUKBGB22",
        "bank_name": "Sandbox Bank USD",
    },
]
SANDBOX_ISSUER = {
    "name": "Balance Worker Ltd (sandbox)",
    "address": "1 Example Street, London EC1A 1AA, United Kingdom",
    "vat_id": "GB000000000",
}


@dataclass(frozen=True)
class BankAccount:
    """Where customers send money in one currency (printed on every pro-forma)."""

    currency: str
    beneficiary: str
    iban: str
    bic: str
    bank_name: str


@dataclass(frozen=True)
class Issuer:
    """Who issues the invoices (INVOICE_ISSUER)."""

    name: str
    address: str
    vat_id: str


def _text(item: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = item.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{where}: {key!r} must be a non-empty string")
    if re.search(r"[\x00-\x1f\x7f]", value) or len(value) > 300:
        raise ValueError(f"{where}: {key!r} has control characters or is too long")
    return value.strip()


@lru_cache(maxsize=8)
def bank_accounts(raw: str) -> dict[str, BankAccount]:
    """BANK_ACCOUNTS: a JSON list of {currency, beneficiary, iban, bic, bank_name}, at most one
    per currency; empty means the sandbox examples. Returns {currency: BankAccount}."""
    try:
        items = json.loads(raw) if raw.strip() else SANDBOX_BANK_ACCOUNTS
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(items, list):
        raise ValueError("must be a JSON list of {currency, beneficiary, iban, bic, bank_name}")
    found: dict[str, BankAccount] = {}
    for index, item in enumerate(items):
        where = f"entry {index}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: must be an object")
        currency = _text(item, "currency", where).upper()
        if not is_currency(currency):
            raise ValueError(f"{where}: {currency!r} is not an ISO 4217 currency code")
        if currency in found:
            raise ValueError(f"{where}: a second account for {currency}")
        from stdnum import bic as std_bic
        from stdnum import iban as std_iban

        iban = std_iban.compact(_text(item, "iban", where))
        if not std_iban.is_valid(iban):
            raise ValueError(f"{where}: {iban[:40]!r} is not a valid IBAN (check digits)")
        bic = std_bic.compact(_text(item, "bic", where))
        if not std_bic.is_valid(bic):
            raise ValueError(f"{where}: {bic[:20]!r} is not a valid BIC")
        found[currency] = BankAccount(
            currency=currency,
            beneficiary=_text(item, "beneficiary", where),
            iban=iban,
            bic=bic,
            bank_name=_text(item, "bank_name", where, required=False),
        )
    return found


@lru_cache(maxsize=8)
def tolerances(raw: str) -> dict[str, Decimal]:
    """BANK_TRANSFER_TOLERANCE: `EUR=20,USD=20` -> {currency: the largest underpayment that
    still closes an invoice}; a currency not listed has none (0)."""
    found: dict[str, Decimal] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        code, sep, value = part.partition("=")
        code = code.strip().upper()
        if not sep or not is_currency(code) or not AMOUNT_RE.match(value.strip()):
            raise ValueError(f"{part!r} is not CURRENCY=AMOUNT (e.g. EUR=20)")
        amount = Decimal(value.strip())
        if amount < 0:
            raise ValueError(f"{part!r}: must be zero or positive")
        found[code] = amount
    return found


@lru_cache(maxsize=8)
def issuer(raw: str) -> Issuer:
    """INVOICE_ISSUER: JSON {name, address, vat_id}; empty means the sandbox issuer."""
    try:
        item = json.loads(raw) if raw.strip() else SANDBOX_ISSUER
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(item, dict):
        raise ValueError("must be a JSON object {name, address, vat_id}")
    return Issuer(
        name=_text(item, "name", "issuer"),
        address=_text(item, "address", "issuer"),
        vat_id=_text(item, "vat_id", "issuer", required=False),
    )


def timezone(raw: str) -> ZoneInfo:
    """INVOICE_TIMEZONE: an IANA zone name (an invoice's year is its issue date there)."""
    try:
        return ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{raw[:60]!r} is not an IANA time zone (e.g. UTC, Asia/Tokyo)") from None


# --- ISO 11649 creditor references (RF) ----------------------------------------------------

RF_BODY_LENGTH = 12  # ours are all RF + 2 check digits + 12 characters: 16 in all
_RF_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: they read as 1/0 on paper
# An RF reference inside a memo, once spaces are removed (banks print it in groups of four).
_RF_IN_TEXT = re.compile(rf"RF[0-9]{{2}}[0-9A-Z]{{{RF_BODY_LENGTH}}}")


def new_creditor_reference() -> str:
    """A fresh random ISO 11649 reference, `RF` + check digits + 12 characters.

    Check digits per ISO 11649: move `RF00` behind the body, letters to numbers, and take
    98 - (n mod 97) (python-stdnum's mod_97_10). Uniqueness is the database's job."""
    body = "".join(secrets.choice(_RF_ALPHABET) for _ in range(RF_BODY_LENGTH))
    from stdnum.iso7064 import mod_97_10

    return "RF" + mod_97_10.calc_check_digits(body + "RF") + body


def is_creditor_reference(value: str) -> bool:
    """True when `value` (spaces allowed) is a valid ISO 11649 reference (check digits hold)."""
    from stdnum import iso11649

    return bool(iso11649.is_valid(value))


def format_creditor_reference(value: str) -> str:
    """Groups of four, as printed on a pro-forma: `RF37 ABCD 1234 EFGH`."""
    from stdnum import iso11649

    return str(iso11649.format(value))


def creditor_references_in(text: str) -> tuple[list[str], list[str]]:
    """(valid, invalid) references of our shape found in a memo, spaces ignored.

    A reference whose check digits fail (a typo) is reported as invalid and never looked
    up, so it cannot match another account by accident."""
    from stdnum import iso11649

    compact = re.sub(r"\s+", "", text.upper())
    valid: list[str] = []
    invalid: list[str] = []
    for found in _RF_IN_TEXT.findall(compact):
        (valid if iso11649.is_valid(found) else invalid).append(found)
    return valid, invalid
