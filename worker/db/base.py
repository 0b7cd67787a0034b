"""The declarative base, id generation and the helpers every domain's models share.

Each domain keeps its own models (`worker/<domain>/models.py`); `worker/models.py`
imports them all so the metadata (Alembic, tests) sees every table.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

from worker.db.types import Money, UtcDateTime

JsonType = JSON().with_variant(JSONB(), "postgresql")


_sequence = itertools.count()


def new_id(prefix: str) -> str:
    """Unique and time-ordered within a process (nanoseconds, a counter, randomness), so
    rows written in one transaction (events) sort in the order they were made."""
    return f"{prefix}_{time.time_ns():016x}{next(_sequence) % 0x10000:04x}{uuid.uuid4().hex[:6]}"


def sql_in(column: str, values: Iterable[StrEnum]) -> str:
    """`column IN ('a', 'b')` for a CHECK constraint or a partial-index predicate, built
    from a state enum so the database and the code name the same states.

    `values` are StrEnum members (their values are plain identifiers, never user input)."""
    quoted = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: Money(), datetime: UtcDateTime()}
