"""What the real sandboxes do, for the stubs: nonces, the amount table, and a "remote side".

The remote side keeps its own records in its own table and its own connections
(autocommit, never inside our unit of work), shared by every worker process, so a lookup
by idempotency key after a crash finds the earlier charge and a repeated key never
charges twice. Knobs: latency (after the remote side recorded the charge, like a slow
answer), and "succeed remotely, then time out locally" for chosen amounts or a rate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import NullPool

from config import Settings
from worker.kernel.clock import now
from worker.kernel.dbpool import ping_when_idle
from worker.kernel.money import exponent
from worker.kernel.validation import refuse_pan
from worker.psp.base import ChargeRequest, ChargeResult, Outcome, RefundRequest, RefundResult
from worker.psp.errors import TransportError, VaultRefused

log = logging.getLogger(__name__)

_metadata = MetaData()
_engines_lock = threading.Lock()
remote_charges = Table(
    "psp_stub_remote_charges",
    _metadata,
    Column("psp", String(32), primary_key=True),
    Column("idempotency_key", String(200), primary_key=True),
    Column("reference", String(64), nullable=False),
    Column("token", String(120), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("code", String(64)),
    Column("text", String(300)),
    Column("refunded_minor", BigInteger, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Built once: the charge path runs these for every charge.
_PG_INSERT = pg_insert(remote_charges).on_conflict_do_nothing().returning(*remote_charges.c)
_SQLITE_INSERT = sqlite_insert(remote_charges).on_conflict_do_nothing().returning(*remote_charges.c)


def _insert(conn: Any) -> Any:
    return _PG_INSERT if conn.dialect.name == "postgresql" else _SQLITE_INSERT


_FIND = select(remote_charges).where(
    remote_charges.c.psp == bindparam("psp"), remote_charges.c.idempotency_key == bindparam("key")
)

# Braintree's processor response texts for the decline range (2000-2999).
_DECLINE_TEXTS = {
    2000: "Do Not Honor", 2001: "Insufficient Funds", 2002: "Limit Exceeded",
    2003: "Cardholder's Activity Limit Exceeded", 2004: "Expired Card",
    2005: "Invalid Credit Card Number", 2006: "Invalid Expiration Date",
    2010: "Card Issuer Declined CVV", 2015: "Transaction Not Allowed",
    2038: "Processor Declined", 2046: "Declined",
    2057: "Issuer or Cardholder has put a restriction on the card",
}  # fmt: skip

CARD_NONCES = {
    "fake-valid-nonce": ("Visa", "1881"),
    "fake-valid-visa-nonce": ("Visa", "1881"),
    "fake-valid-mastercard-nonce": ("MasterCard", "4444"),
    "fake-valid-amex-nonce": ("American Express", "0005"),
}
PAYPAL_NONCE = "fake-paypal-billing-agreement-nonce"
DECLINED_NONCE = "fake-processor-declined-visa-nonce"
CONSUMED_NONCE = "fake-consumed-nonce"


@dataclass(frozen=True)
class Nonce:
    base: str
    tag: str


def parse_nonce(raw: str) -> Nonce:
    """`fake-valid-visa-nonce:alice` -> a distinct card per tag; a card number is refused."""
    refuse_pan(raw, "nonce")
    base, _, tag = raw.strip().partition(":")
    return Nonce(base=base, tag=tag)


def fingerprint(kind: str, *parts: str) -> str:
    """Stable per instrument: the same nonce and tag always mean the same card/account."""
    return hashlib.sha256(":".join((kind, *parts)).encode()).hexdigest()[:40]


def refuse_special_nonces(nonce: Nonce) -> None:
    if nonce.base == DECLINED_NONCE:
        raise VaultRefused("2000", "card verification failed: processor declined (Do Not Honor)")
    if nonce.base == CONSUMED_NONCE:
        raise VaultRefused("93107", "payment method nonce has already been consumed")


def sandbox_result(amount_minor: int, currency: str) -> tuple[Outcome, str | None, str | None]:
    """Braintree's sandbox amount table (the amount in major units decides)."""
    amount = Decimal(amount_minor).scaleb(-exponent(currency))
    if amount == Decimal("2099.00"):  # processor response 2099: 3-D Secure needed (issue 17)
        return Outcome.REQUIRES_ACTION, "2099", "Cardholder Authentication Required"
    if Decimal("2000.00") <= amount <= Decimal("2999.99"):
        code = int(amount)
        return Outcome.DECLINED, str(code), _DECLINE_TEXTS.get(code, "Processor Declined")
    if Decimal("3000.00") <= amount <= Decimal("3000.99"):
        return Outcome.NOT_ATTEMPTED, "3000", "Processor Network Unavailable - Try Again"
    if amount == Decimal("5001.00"):
        return Outcome.DECLINED, "gateway_rejected", "Gateway Rejected: application_incomplete"
    return Outcome.SUCCEEDED, None, None


class RemoteSide:
    """The stub PSP's own records: separate table, separate connections, autocommit."""

    _engines: dict[tuple[int, str], Engine] = {}  # noqa: RUF012 - a per-process cache

    def __init__(self, settings: Settings, psp: str) -> None:
        self.psp = psp
        self.url = settings.psp_stub_database_url or settings.effective_database_url
        self.latency = settings.psp_stub_latency_ms / 1000
        self.timeout_amounts = set(settings.psp_stub_timeout_amounts)
        self.timeout_rate_ppm = int(settings.psp_stub_timeout_rate * 1_000_000)

    @property
    def engine(self) -> Engine:
        key = (os.getpid(), self.url)
        engine = self._engines.get(key)
        if engine is not None:
            return engine
        with _engines_lock:  # many threads may ask first at once: build one engine
            return self._build(key)

    def _build(self, key: tuple[int, str]) -> Engine:
        engine = self._engines.get(key)
        if engine is None:
            if self.url.startswith("sqlite"):
                # SQLite keeps its default transactions: one statement each there too.
                engine = create_engine(self.url, connect_args={"timeout": 30})
                with engine.begin() as conn:
                    _metadata.create_all(conn, checkfirst=True)
            else:
                setup = create_engine(self.url, poolclass=NullPool)
                with setup.begin() as conn:  # one process creates the table
                    conn.execute(text("SELECT pg_advisory_xact_lock(7342001)"))
                    _metadata.create_all(conn, checkfirst=True)
                setup.dispose()
                # Every use is one statement: connections are autocommit from the start (no
                # BEGIN/COMMIT round trips, no isolation level switched per checkout).
                engine = create_engine(
                    self.url, pool_size=2, max_overflow=8, isolation_level="AUTOCOMMIT"
                )
                ping_when_idle(engine)
            self._engines[key] = engine
        return engine

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Record once per key (a repeat returns the first outcome), then answer."""
        outcome, code, msg = sandbox_result(request.amount_minor, request.currency)
        reference = f"{self.psp[:2]}_{uuid.uuid4().hex[:16]}"
        row = self._row(request, outcome, reference, code, msg)
        # One statement for a new key (the row comes back from the INSERT); a repeated key
        # (or a processor that is unavailable) reads the first record instead.
        with self.engine.begin() as conn:
            stored = None
            if outcome is not Outcome.NOT_ATTEMPTED:
                stored = conn.execute(_insert(conn), row).one_or_none()
            if stored is None:
                stored = self._find(conn, request.idempotency_key)
        if self.latency:
            time.sleep(self.latency)
        if stored is None:  # processor unavailable: nothing was recorded
            return ChargeResult(Outcome.NOT_ATTEMPTED, None, code, msg)
        result = self._result(stored)
        if result.outcome is Outcome.SUCCEEDED and self.times_out(request):
            raise TransportError("read timed out after the PSP accepted the charge", sent=True)
        return result

    def lookup(self, idempotency_key: str) -> ChargeResult | None:
        with self.engine.connect() as conn:
            stored = self._find(conn, idempotency_key)
        if stored is None:
            return None
        processed = stored.created_at
        if processed.tzinfo is None:  # SQLite hands back naive UTC
            processed = processed.replace(tzinfo=UTC)
        return replace(self._result(stored), processed_at=processed)

    def record(
        self,
        request: ChargeRequest,
        outcome: Outcome,
        reference: str,
        code: str | None = None,
        text: str | None = None,
    ) -> ChargeResult:
        """Record a charge with a given outcome once per key (a repeat returns the first
        record): for stubs whose answer does not come from the amount table (WeChat Pay)."""
        row = self._row(request, outcome, reference, code, text)
        with self.engine.begin() as conn:
            stored = conn.execute(_insert(conn), row).one_or_none()
            if stored is None:
                stored = self._find(conn, request.idempotency_key)
        return self._result(stored)

    def complete(
        self,
        idempotency_key: str,
        outcome: Outcome,
        code: str | None = None,
        text: str | None = None,
    ) -> bool:
        """Move a pending charge to its final outcome (the payer paid, or the order expired);
        False when there is no pending charge with that key."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(remote_charges)
                .where(
                    remote_charges.c.psp == self.psp,
                    remote_charges.c.idempotency_key == idempotency_key,
                    remote_charges.c.outcome == Outcome.PENDING.value,
                )
                # created_at is what a look-up reports as processed_at: when it was paid.
                .values(outcome=outcome.value, code=code, text=text, created_at=now())
                .returning(remote_charges.c.reference)
            ).one_or_none()
        return moved is not None

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a succeeded charge found by its reference, at most what it has left, once
        per refund key (a repeat returns the first answer). Refunds are rows of their own
        under `<psp>:refund`. Not atomic across its statements: a stub for one caller.

        As the sandbox: a refund amount in the decline range (2000.00-2999.99) is declined
        with that processor response (our fixture of Braintree's "refund declined by the
        processor" test amounts); a PSP_STUB_TIMEOUT_AMOUNTS amount is refunded, then the
        answer is lost (TransportError, sent=True)."""
        refunds = f"{self.psp}:refund"
        outcome, code, msg = sandbox_result(request.amount_minor, request.currency)
        declined = outcome is Outcome.DECLINED
        with self.engine.begin() as conn:
            earlier = conn.execute(
                _FIND, {"psp": refunds, "key": request.idempotency_key}
            ).one_or_none()
            if earlier is None:
                charges = remote_charges.c
                taken = None
                if not declined:
                    taken = conn.execute(
                        update(remote_charges)
                        .where(
                            charges.psp == self.psp,
                            charges.reference == request.charge_reference,
                            charges.outcome == Outcome.SUCCEEDED.value,
                            charges.currency == request.currency,
                            charges.refunded_minor + request.amount_minor <= charges.amount_minor,
                        )
                        .values(refunded_minor=charges.refunded_minor + request.amount_minor)
                        .returning(charges.reference)
                    ).one_or_none()
                if not declined and taken is None:
                    code, msg = "not_refundable", "no succeeded charge with that much left"
                row = self._row(
                    ChargeRequest(
                        request.idempotency_key,
                        request.charge_reference,  # the token column holds what it refunds
                        request.amount_minor,
                        request.currency,
                        "refund",
                    ),
                    Outcome.SUCCEEDED if taken else Outcome.DECLINED,
                    f"rf_{uuid.uuid4().hex[:16]}",
                    None if taken else code,
                    None if taken else msg,
                    psp=refunds,
                )
                conn.execute(_insert(conn), row)
                earlier = conn.execute(
                    _FIND, {"psp": refunds, "key": request.idempotency_key}
                ).one()
        if self.latency:  # a slow answer, after the refund was made (as for charges)
            time.sleep(self.latency)
        result = self._refund_result(earlier)
        if result.outcome is Outcome.SUCCEEDED and self.times_out(request):
            raise TransportError("read timed out after the PSP accepted the refund", sent=True)
        return result

    def lookup_refund(
        self, idempotency_key: str, charge_reference: str | None = None
    ) -> RefundResult | None:
        """The refund recorded under this refund key, or None if none was ever received
        (the key alone finds it: `charge_reference` is not needed)."""
        with self.engine.connect() as conn:
            stored = conn.execute(
                _FIND, {"psp": f"{self.psp}:refund", "key": idempotency_key}
            ).one_or_none()
        return None if stored is None else self._refund_result(stored)

    @staticmethod
    def _refund_result(stored: Any) -> RefundResult:
        reference = stored.reference if stored.outcome == Outcome.SUCCEEDED.value else None
        return RefundResult(Outcome(stored.outcome), reference, stored.code, stored.text)

    def count(self, idempotency_key: str | None = None) -> int:
        """How many charges the remote side holds (tests prove 'never twice' with it)."""
        with self.engine.connect() as conn:
            query = select(remote_charges.c.idempotency_key).where(remote_charges.c.psp == self.psp)
            if idempotency_key is not None:
                query = query.where(remote_charges.c.idempotency_key == idempotency_key)
            return len(conn.execute(query).all())

    def _row(
        self,
        request: ChargeRequest,
        outcome: Outcome,
        reference: str,
        code: str | None,
        text: str | None,
        psp: str | None = None,
    ) -> dict[str, Any]:
        return {
            "psp": psp or self.psp,
            "idempotency_key": request.idempotency_key,
            "reference": reference,
            "token": request.token,
            "amount_minor": request.amount_minor,
            "currency": request.currency,
            "outcome": outcome.value,
            "code": code,
            "text": text,
            "refunded_minor": 0,
            "created_at": now(),
        }

    def _find(self, conn: Any, key: str) -> Any:
        return conn.execute(_FIND, {"psp": self.psp, "key": key}).one_or_none()

    @staticmethod
    def _result(stored: Any) -> ChargeResult:
        return ChargeResult(Outcome(stored.outcome), stored.reference, stored.code, stored.text)

    def times_out(self, request: ChargeRequest | RefundRequest) -> bool:
        amount = Decimal(request.amount_minor).scaleb(-exponent(request.currency))
        if amount in self.timeout_amounts:
            return True
        return self.timeout_rate_ppm > 0 and random.randrange(1_000_000) < self.timeout_rate_ppm
