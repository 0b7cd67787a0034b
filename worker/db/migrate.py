"""Schema migrations (Alembic) driven from code: `balancectl db upgrade`, embedded start, tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(revision: str = "head") -> None:
    """Create or migrate the schema of the configured database."""
    command.upgrade(alembic_config(), revision)


def head_revisions() -> tuple[str, ...]:
    """The revision(s) this code's migrations end at (one, unless branches are unmerged)."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def current_revision(connection: Connection) -> str | None:
    """The schema revision recorded in the database, or None when it has no schema.

    Only reads: Alembic creates its version table on upgrade or stamp, never here."""
    revisions = MigrationContext.configure(connection).get_current_heads()
    return ",".join(sorted(revisions)) or None


def revision(message: str) -> None:  # pragma: no cover - developer tool
    command.revision(alembic_config(), message=message, autogenerate=True)
