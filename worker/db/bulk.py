"""Statements over many rows at once (a statement import's chunk of 1,000 transfers).

`copy_rows`: PostgreSQL's COPY for many new rows (ledger postings, events), on the
session's own connection, so in its transaction.

COPY is several times faster than an INSERT per row (executemany) or multi-row INSERTs
(measured on 2,400 ledger transactions: 0.10 s vs 0.25 s vs 0.80 s); it has no ON
CONFLICT, so it is only for rows that are new by construction (fresh ids). Other
databases get an executemany INSERT.

`among`: `column = ANY(:array)`, one parameter, where `column IN (...)` would send one
placeholder per value (psycopg parses such a statement anew each time: thousands of
placeholders cost more than the query).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import ColumnElement, Table, any_, bindparam, insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session


def among(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values` as one array parameter on PostgreSQL (`column = ANY(:values)`)."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(list(values))  # type: ignore[no-any-return]
    array = bindparam(None, list(values), type_=ARRAY(column.type))
    return column == any_(array)  # type: ignore[no-any-return]


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
