"""Gap-free invoice numbers: `PF-2026-000001`, `INV-2026-000001`, `CN-2026-000001`.

Tax offices ask for a series without gaps. A number is taken in the transaction that
issues the invoice, by one statement on the series' counter row for that year:

    INSERT INTO invoice_counters (series, year, last) VALUES (:s, :y, 1)
    ON CONFLICT (series, year) DO UPDATE SET last = invoice_counters.last + 1
    RETURNING last

The row stays locked until that transaction ends, so concurrent issuers queue behind it
(no duplicate); a transaction that rolls back takes its increment with it (no gap). The
year is the issue date's in INVOICE_TIMEZONE (CONTRACT.md, "Wave 2 details").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config import get_settings
from worker.invoices.models import InvoiceCounter, Series
from worker.kernel import bank_settings

DIGITS = 6


def year_of(moment: datetime) -> int:
    """The invoice year of an issue moment: its date in INVOICE_TIMEZONE."""
    zone = bank_settings.timezone(get_settings().invoice_timezone)
    return moment.astimezone(zone).year


def take(session: Session, series: Series, issued_at: datetime) -> str:
    """The next number of `series` for the year of `issued_at`, e.g. `INV-2026-000042`.

    Must run in the transaction that stores the invoice with this number (see above)."""
    year = year_of(issued_at)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(InvoiceCounter)
        .values(series=series.value, year=year, last=1)
        .on_conflict_do_update(
            index_elements=[InvoiceCounter.series, InvoiceCounter.year],
            set_={"last": InvoiceCounter.last + 1},
        )
        .returning(InvoiceCounter.last)
    )
    last = session.execute(statement).scalar_one()
    return format_number(series, year, last)


def take_block(session: Session, series: Series, issued_at: datetime, count: int) -> list[str]:
    """The next `count` numbers of `series` in one statement (a statement import's chunk),
    in order; as `take`, in the transaction that stores the invoices with them: a rollback
    takes the whole block back (no gap), and the counter row stays locked until the end."""
    if count <= 0:
        return []
    year = year_of(issued_at)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(InvoiceCounter)
        .values(series=series.value, year=year, last=count)
        .on_conflict_do_update(
            index_elements=[InvoiceCounter.series, InvoiceCounter.year],
            set_={"last": InvoiceCounter.last + count},
        )
        .returning(InvoiceCounter.last)
    )
    last = session.execute(statement).scalar_one()
    return [format_number(series, year, seq) for seq in range(last - count + 1, last + 1)]


def format_number(series: Series, year: int, sequence: int) -> str:
    """`INV-2026-000042`; a year's millionth invoice widens the field rather than wrap."""
    return f"{series.value}-{year:04d}-{sequence:0{DIGITS}d}"
