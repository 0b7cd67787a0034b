"""Is an embedded (SQLite) database already at the code's head revision? Without Alembic.

Every embedded command used to run `alembic upgrade head` first: importing Alembic and
building its script directory cost about a third of `balancectl accounts show`. This reads
the revision ids from the migration files (`revision = "..."` / `down_revision = ...`, the
form every file here uses) and the database's `alembic_version` with the standard library;
only when they differ (or anything is unclear) does the caller run the real upgrade.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

VERSIONS = Path(__file__).with_name("migrations") / "versions"
_REVISION = re.compile(r'^revision\s*(?::[^=]*)?=\s*["\']([^"\']+)["\']', re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)


def head_revisions() -> frozenset[str] | None:
    """The revisions no other revision names as its parent; None if a file cannot be read
    this simply (the caller then asks Alembic)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision = _REVISION.search(source)
        down = _DOWN.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        parents.update(re.findall(r'["\']([^"\']+)["\']', down.group(1)))
    heads = frozenset(revisions - parents)
    return heads or None


def at_head(database: Path) -> bool:
    """True when the SQLite file exists and records exactly the code's head revision(s).
    Any doubt (no file, no table, a locked or foreign file) answers False."""
    heads = head_revisions()
    if heads is None or not database.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return frozenset(row[0] for row in rows) == heads
