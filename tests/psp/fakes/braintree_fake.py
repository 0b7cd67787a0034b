"""A fake of Braintree's gateway API (XML, the API the official `braintree` SDK speaks), for
the endpoints `worker/psp/braintree_gateway.py` uses. The SDK really does its HTTP against it.

Shapes follow Braintree's API as the SDK parses it (braintree_python: `util/parser.py`,
`transaction.py`, `credit_card.py`, `error_result.py`, `webhook_testing_gateway.py` samples):
dashed element names, `type="integer|boolean|datetime|array"` attributes, `nil="true"`, an
`<api-error-response>` (HTTP 422) with `<errors>`, `<message>` and, for a declined sale or a
failed verification, the `<transaction>` or `<verification>`.

Behaviour follows Braintree's sandbox (reference/general/testing): nonces
`fake-valid-nonce`, `fake-valid-visa-nonce`, `fake-valid-mastercard-nonce`,
`fake-valid-amex-nonce`, `fake-paypal-billing-agreement-nonce`,
`fake-processor-declined-visa-nonce` (verification declined 2000), `fake-consumed-nonce`
(93107); the fake nonces can be used again, like the sandbox's; amounts 2000.00-2999.99
processor-declined with that code (2099: "Cardholder Authentication Required"),
3000.00-3000.99 failed with 3000, 5001.00 gateway rejected.
A fake-only extension: `NONCE:tag` is a distinct card or PayPal payer per tag.
Knobs: `hang_amounts` (the sale is recorded, the answer comes after `hang_seconds`),
`error_amounts` (the sale is recorded, the answer is a 500), `fail_next_sales` (the processor
is down), `default_currency` and `merchant_accounts`, `settle(id)`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tests.psp.fakes.http import Request, Response

MERCHANT_ID = "fake_merchant"
PUBLIC_KEY = "fake_public_key"
PRIVATE_KEY = "fake-private-key-not-a-secret"

CARD_NONCES = {
    "fake-valid-nonce": ("Visa", "411111", "1111"),
    "fake-valid-visa-nonce": ("Visa", "411111", "1111"),
    "fake-valid-mastercard-nonce": ("MasterCard", "555555", "4444"),
    "fake-valid-amex-nonce": ("American Express", "378282", "0005"),
}
PAYPAL_NONCE = "fake-paypal-billing-agreement-nonce"
DECLINED_NONCE = "fake-processor-declined-visa-nonce"
CONSUMED_NONCE = "fake-consumed-nonce"

# Processor responses (reference/general/processor-responses/authorization-responses).
DECLINES = {
    2000: ("Do Not Honor", "soft_declined"),
    2001: ("Insufficient Funds", "soft_declined"),
    2002: ("Limit Exceeded", "soft_declined"),
    2004: ("Expired Card", "hard_declined"),
    2005: ("Invalid Credit Card Number", "hard_declined"),
    2015: ("Transaction Not Allowed", "hard_declined"),
    2046: ("Declined", "soft_declined"),
    2099: ("Cardholder Authentication Required", "soft_declined"),
}


_CARD_FIELDS = (
    "token",
    "bin",
    "last_4",
    "card_type",
    "expiration_month",
    "expiration_year",
    "expired",
    "unique_number_identifier",
)


# -- XML both ways ---------------------------------------------------------------------------


def parse(body: bytes) -> dict[str, Any]:
    """The SDK's request XML as a dict: names with underscores, arrays as lists."""
    root = ET.fromstring(body)
    return {root.tag.replace("-", "_"): _value(root)}


def _value(node: ET.Element) -> Any:
    kind = node.get("type")
    if kind == "array":
        return [_value(child) for child in node]
    if len(node):
        return {child.tag.replace("-", "_"): _value(child) for child in node}
    text = node.text or ""
    if kind == "boolean":
        return text == "true"
    if kind == "integer":
        return int(text)
    return text


@dataclass(frozen=True)
class Items:
    """An XML array whose elements are named `tag` (`<status-history type="array">`)."""

    tag: str
    values: list[Any]


def render(tag: str, value: Any) -> bytes:
    root = _element(tag, value)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def _element(tag: str, value: Any) -> ET.Element:
    node = ET.Element(tag.replace("_", "-"))
    if value is None:
        node.set("nil", "true")
    elif isinstance(value, bool):
        node.set("type", "boolean")
        node.text = "true" if value else "false"
    elif isinstance(value, int):
        node.set("type", "integer")
        node.text = str(value)
    elif isinstance(value, datetime):
        node.set("type", "datetime")
        node.text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif isinstance(value, Items):
        node.set("type", "array")
        for item in value.values:
            node.append(_element(value.tag, item))
    elif isinstance(value, dict):
        for key, child in value.items():
            node.append(_element(key, child))
    else:
        node.text = str(value)
    return node


def _xml(status: int, tag: str, value: Any, delay: float = 0.0) -> Response:
    return Response(status, render(tag, value), "application/xml; charset=utf-8", delay=delay)


def _error(message: str, code: str, attribute: str, on: str, **extra: Any) -> Response:
    errors: dict[str, Any] = {"errors": Items("error", [])}
    errors[on] = {
        "errors": Items("error", [{"code": code, "attribute": attribute, "message": message}])
    }
    return _xml(422, "api-error-response", {"errors": errors, "message": message, **extra})


# -- the gateway -----------------------------------------------------------------------------


@dataclass
class Card:
    brand: str
    bin: str
    last4: str
    unique: str


@dataclass
class BraintreeFake:
    default_currency: str = "EUR"
    merchant_accounts: dict[str, str] = field(default_factory=dict)  # id -> currency
    hang_amounts: set[str] = field(default_factory=set)
    hang_seconds: float = 2.0
    error_amounts: set[str] = field(default_factory=set)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> method
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next_sales: int = 0  # the processor is down for the next N sales (status failed, 3000)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # -- what tests read ---------------------------------------------------------------

    def sales(self, order_id: str) -> list[dict[str, Any]]:
        return [
            t
            for t in self.transactions.values()
            if t["type"] == "sale" and t["order_id"] == order_id and t["status"] != "failed"
        ]

    def credits(self, sale_id: str) -> list[dict[str, Any]]:
        return [
            t for t in self.transactions.values() if t.get("refunded_transaction_id") == sale_id
        ]

    def settle(self, transaction_id: str) -> None:
        """What Braintree's nightly batch does (sandbox: TestingGateway.settle)."""
        self._move(self.transactions[transaction_id], "settled")

    # -- HTTP ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{PRIVATE_KEY}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Response(401, b"", "text/plain")
        prefix = f"/merchants/{MERCHANT_ID}/"
        if not request.path.startswith(prefix):
            return Response(404, b"", "text/plain")
        path = request.path[len(prefix) :].rstrip("/")
        body = parse(request.body) if request.body.strip() else {}
        with self._lock:
            return self._route(request.method, path, body)

    def _route(self, method: str, path: str, body: dict[str, Any]) -> Response:
        if method == "GET" and (match := re.fullmatch(r"customers/([^/]+)", path)):
            customer = self.customers.get(match[1])
            return _xml(200, "customer", customer) if customer else Response(404)
        if method == "POST" and path == "customers":
            return self._create_customer(body["customer"])
        if method == "POST" and path == "payment_methods":
            return self._create_method(body["payment_method"])
        if method == "POST" and path == "transactions":
            return self._sale(body["transaction"])
        if method == "POST" and path == "transactions/advanced_search_ids":
            ids = [t["id"] for t in self._search(body["search"])]
            return _xml(200, "search-results", {"page_size": 50, "ids": Items("item", ids)})
        if method == "POST" and path == "transactions/advanced_search":
            found = [self._view(t) for t in self._search(body["search"])]
            page = {
                "current_page_number": 1,
                "page_size": 50,
                "total_items": len(found),
            }
            root = _element("credit-card-transactions", page)
            root.set("type", "collection")
            for item in found:
                root.append(_element("transaction", item))
            return Response(200, ET.tostring(root), "application/xml")
        if method == "GET" and (match := re.fullmatch(r"transactions/([^/]+)", path)):
            found = self.transactions.get(match[1])
            return _xml(200, "transaction", self._view(found)) if found else Response(404)
        if method == "POST" and (match := re.fullmatch(r"transactions/([^/]+)/refund", path)):
            return self._refund(match[1], body.get("transaction") or {})
        if method == "PUT" and (match := re.fullmatch(r"transactions/([^/]+)/void", path)):
            return self._void(match[1])
        if method == "GET" and path == "merchant_accounts":
            accounts = {"current_page_number": 1, "page_size": 50}
            listing = [
                {
                    "id": "default_account",
                    "currency_iso_code": self.default_currency,
                    "default": True,
                }
            ] + [
                {"id": ident, "currency_iso_code": cur, "default": False}
                for ident, cur in self.merchant_accounts.items()
            ]
            accounts["total_items"] = len(listing)
            root = _element("merchant-accounts", accounts)
            root.set("type", "collection")
            for item in listing:
                root.append(_element("merchant-account", {**item, "status": "active"}))
            return Response(200, ET.tostring(root), "application/xml")
        return Response(404, b"", "text/plain")

    # -- customers and payment methods ---------------------------------------------------

    def _create_customer(self, params: dict[str, Any]) -> Response:
        ident = params.get("id") or uuid.uuid4().hex[:10]
        if ident in self.customers:
            return _error("Customer ID has already been taken.", "91609", "id", "customer")
        now = datetime.now(UTC)
        self.customers[ident] = {"id": ident, "created_at": now, "updated_at": now}
        return _xml(201, "customer", self.customers[ident])

    def _create_method(self, params: dict[str, Any]) -> Response:
        customer = params.get("customer_id")
        if customer not in self.customers:
            return _error("Customer ID is invalid.", "91510", "customer_id", "payment_method")
        raw = str(params.get("payment_method_nonce", ""))
        base, _, rest = raw.partition(":")
        tag = rest.partition(":")[0]  # NONCE:tag[:anything]: the same instrument per tag
        if base == CONSUMED_NONCE:
            return _error(
                "Cannot use a payment_method_nonce more than once.",
                "93107",
                "payment_method_nonce",
                "payment_method",
            )
        token = uuid.uuid4().hex[:8]
        now = datetime.now(UTC)
        if base == PAYPAL_NONCE:
            payer = "PAYER" + hashlib.sha256(tag.encode()).hexdigest()[:8].upper()
            email = f"payer+{tag}@example.com" if tag else "payer@example.com"
            method = {
                "token": token,
                "email": email,
                "payer_id": payer,
                "billing_agreement_id": "B-" + uuid.uuid4().hex[:12].upper(),
                "customer_id": customer,
                "default": True,
                "image_url": "https://assets.braintreegateway.com/payment_method_logo/paypal.png",
                "created_at": now,
                "updated_at": now,
            }
            self.methods[token] = {"kind": "paypal", **method}
            return _xml(201, "paypal-account", method)
        if base == DECLINED_NONCE:
            verification = {
                "id": uuid.uuid4().hex[:8],
                "status": "processor_declined",
                "processor_response_code": "2000",
                "processor_response_text": "Do Not Honor",
                "processor_response_type": "soft_declined",
                "gateway_rejection_reason": None,
                "amount": "0.00",
                "currency_iso_code": self.default_currency,
                "created_at": now,
            }
            return _xml(
                422,
                "api-error-response",
                {
                    "errors": {"errors": Items("error", [])},
                    "message": "Do Not Honor",
                    "verification": verification,
                },
            )
        card = CARD_NONCES.get(base)
        if card is None:
            return _error(
                "Unknown or expired payment_method_nonce.",
                "91565",
                "payment_method_nonce",
                "payment_method",
            )
        brand, bin_, last4 = card
        unique = hashlib.md5(f"{bin_}{last4}:{tag}".encode()).hexdigest()  # 32 hex, as Braintree
        method = {
            "token": token,
            "bin": bin_,
            "last_4": last4,
            "card_type": brand,
            "expiration_month": "12",
            "expiration_year": "2030",
            "expired": False,
            "unique_number_identifier": unique,
            "customer_id": customer,
            "default": True,
            "created_at": now,
            "updated_at": now,
        }
        self.methods[token] = {"kind": "card", **method}
        return _xml(201, "credit-card", method)

    # -- transactions --------------------------------------------------------------------

    def _new(self, kind: str, amount: str, currency: str, **rest: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        ident = f"{next(self._ids):04d}{uuid.uuid4().hex[:4]}"
        txn = {
            "id": ident,
            "type": kind,
            "amount": amount,
            "currency_iso_code": currency,
            "created_at": now,
            "updated_at": now,
            "status_history": [],
            **rest,
        }
        self.transactions[ident] = txn
        return txn

    def _move(self, txn: dict[str, Any], status: str) -> None:
        now = datetime.now(UTC)
        txn["status"] = status
        txn["updated_at"] = now
        txn["status_history"].append(
            {"timestamp": now, "status": status, "amount": txn["amount"], "user": "api"}
        )

    def _sale(self, params: dict[str, Any]) -> Response:
        method = self.methods.get(str(params.get("payment_method_token")))
        if method is None:
            return _error(
                "Payment method token is invalid.",
                "91518",
                "payment_method_token",
                "transaction",
            )
        account = params.get("merchant_account_id")
        if account is not None and account not in self.merchant_accounts:
            return _error(
                "Merchant account ID is invalid.", "91513", "merchant_account_id", "transaction"
            )
        currency = self.merchant_accounts.get(account, self.default_currency)
        amount = Decimal(params["amount"])
        txn = self._new(
            "sale",
            params["amount"],
            currency,
            order_id=params.get("order_id"),
            merchant_account_id=account or "default_account",
            customer_id=method["customer_id"],
            payment_method_token=method["token"],
            transaction_source=params.get("transaction_source"),
            submitted=bool((params.get("options") or {}).get("submit_for_settlement")),
        )
        if Decimal("2000") <= amount < Decimal("3000"):
            text, kind = DECLINES.get(int(amount), ("Processor Declined", "soft_declined"))
            txn.update(processor_response_code=str(int(amount)), processor_response_text=text)
            txn["processor_response_type"] = kind
            self._move(txn, "processor_declined")
            return self._refused(txn, text)
        if self.fail_next_sales > 0 or Decimal("3000") <= amount < Decimal("3001"):
            self.fail_next_sales = max(0, self.fail_next_sales - 1)
            txn.update(processor_response_code="3000", processor_response_type="soft_declined")
            txn["processor_response_text"] = "Processor Network Unavailable - Try Again"
            self._move(txn, "failed")
            return self._refused(txn, txn["processor_response_text"])
        if amount == Decimal("5001.00"):
            txn.update(gateway_rejection_reason="application_incomplete")
            self._move(txn, "gateway_rejected")
            return self._refused(txn, "Gateway Rejected: application_incomplete")
        txn.update(
            processor_response_code="1000",
            processor_response_text="Approved",
            processor_response_type="approved",
        )
        self._move(txn, "authorized")
        if txn["submitted"]:
            self._move(txn, "submitted_for_settlement")
        if params["amount"] in self.error_amounts:
            return Response(500, b"", "text/plain")
        delay = self.hang_seconds if params["amount"] in self.hang_amounts else 0.0
        return _xml(201, "transaction", self._view(txn), delay=delay)

    def _refused(self, txn: dict[str, Any], message: str) -> Response:
        body = {
            "errors": {"errors": Items("error", [])},
            "message": message,
            "transaction": self._view(txn),
        }
        return _xml(422, "api-error-response", body)

    def _search(self, criteria: dict[str, Any]) -> list[dict[str, Any]]:
        found = list(self.transactions.values())
        if "order_id" in criteria:
            wanted = str(criteria["order_id"]["is"]).lower()  # Braintree text search: no case
            found = [t for t in found if str(t.get("order_id") or "").lower() == wanted]
        if "type" in criteria:
            found = [t for t in found if t["type"] in criteria["type"]]
        if "ids" in criteria:
            found = [t for t in found if t["id"] in criteria["ids"]]
        return found

    def _refund(self, sale_id: str, params: dict[str, Any]) -> Response:
        sale = self.transactions.get(sale_id)
        if sale is None:
            return Response(404)
        if sale["status"] not in ("settled", "settling"):
            return _error(
                "Cannot refund transaction unless it is settled.", "91506", "base", "transaction"
            )
        amount = Decimal(params.get("amount") or sale["amount"])
        refunded = sum(Decimal(c["amount"]) for c in self.credits(sale_id))
        if refunded + amount > Decimal(sale["amount"]):
            return _error("Refund amount is too large.", "91521", "amount", "transaction")
        credit = self._new(
            "credit",
            f"{amount:.2f}",
            sale["currency_iso_code"],
            order_id=params.get("order_id"),
            refunded_transaction_id=sale_id,
            merchant_account_id=sale["merchant_account_id"],
            customer_id=sale["customer_id"],
            payment_method_token=sale["payment_method_token"],
            processor_response_code="1002",
            processor_response_text="Processed",
            processor_response_type="approved",
        )
        self._move(credit, "submitted_for_settlement")
        sale.setdefault("refund_ids", []).append(credit["id"])
        # A hang amount is refunded, then answered too late (as a sale is).
        delay = self.hang_seconds if f"{amount:.2f}" in self.hang_amounts else 0.0
        return _xml(201, "transaction", self._view(credit), delay=delay)

    def _void(self, sale_id: str) -> Response:
        sale = self.transactions.get(sale_id)
        if sale is None:
            return Response(404)
        if sale["status"] not in ("authorized", "submitted_for_settlement"):
            return _error(
                "Transaction can only be voided if status is authorized, "
                "submitted_for_settlement, or - for PayPal - settlement_pending.",
                "91504",
                "base",
                "transaction",
            )
        self._move(sale, "voided")
        return _xml(200, "transaction", self._view(sale))

    def _view(self, txn: dict[str, Any]) -> dict[str, Any]:
        """The transaction as Braintree's XML shows it."""
        method = self.methods.get(txn.get("payment_method_token") or "", {})
        view: dict[str, Any] = {
            "id": txn["id"],
            "status": txn["status"],
            "type": txn["type"],
            "currency_iso_code": txn["currency_iso_code"],
            "amount": txn["amount"],
            "merchant_account_id": txn.get("merchant_account_id"),
            "order_id": txn.get("order_id"),
            "created_at": txn["created_at"],
            "updated_at": txn["updated_at"],
            "customer": {"id": txn.get("customer_id")},
            "processor_response_code": txn.get("processor_response_code"),
            "processor_response_text": txn.get("processor_response_text"),
            "processor_response_type": txn.get("processor_response_type"),
            "gateway_rejection_reason": txn.get("gateway_rejection_reason"),
            "refunded_transaction_id": txn.get("refunded_transaction_id"),
            "refund_ids": Items("item", txn.get("refund_ids", [])),
            "status_history": Items("status-event", txn["status_history"]),
        }
        if txn.get("transaction_source"):
            view["transaction_source"] = txn["transaction_source"]
        if method.get("kind") == "card":
            view["payment_instrument_type"] = "credit_card"
            view["credit_card"] = {k: method[k] for k in _CARD_FIELDS}
        elif method.get("kind") == "paypal":
            view["payment_instrument_type"] = "paypal_account"
            view["paypal"] = {"token": method["token"], "payer_email": method["email"]}
        return view
