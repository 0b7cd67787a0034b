"""balancectl: the operators' command line (CONTRACT.md), a typer sub-app per domain.

The modules in MODULES register their commands on the root app in `worker.cli.common`;
their order is the order of `balancectl --help`. `main()` imports only the module of the
command it runs (COMMANDS: first word -> module), so `balancectl accounts show` never
imports the PDF renderer, Celery or the other domains (the fast-CLI budget in README.md);
help, an unknown word, or a command missing from COMMANDS import every module, so a new
module only has to be added to MODULES to work. `from worker.cli import app` (tests)
gives the app with every command.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

MODULES = (
    "accounts",
    "alerts",
    "auto_reload",
    "bank",
    "exports",
    "fx",
    "info",
    "invoices",
    "ledger",
    "numbers",
    "ops",
    "payments",
    "refunds",
    "settlement",
)

# The first word of a command line -> the module that registers it (tests/cli check it).
COMMANDS = {
    "accounts": "accounts",
    "alerts": "alerts",
    "auto-reload": "auto_reload",
    "bank": "bank",
    "info": "info",
    "invoices": "invoices",
    "usage": "ledger",
    "adjust": "ledger",
    "ledger": "ledger",
    "audit": "ledger",
    "numbers": "numbers",
    "run": "ops",
    "db": "ops",
    "jobs": "ops",
    "methods": "payments",
    "top-up": "payments",
    "charges": "payments",
    "refund": "refunds",
    "refunds": "refunds",
    "settlement": "settlement",
    "export": "exports",
    "fx": "fx",
}


def load(names: tuple[str, ...] = MODULES) -> typer.Typer:
    """Import the named command modules (each registers its commands); the root app."""
    for name in names:
        import_module(f"worker.cli.{name}")
    from worker.cli.common import app

    return app


def _first_word(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
        return None  # an option before the command (--help): everything is needed
    return None


# Reads that compute no settlement date: they skip the settlement table's validation
# (config.settings.defer_settlement_check), the largest part of their start-up.
LIGHT_READS = {("accounts", "show"), ("accounts", "list"), ("ledger", None)}


def _light(argv: list[str]) -> bool:
    words = [a for a in argv if not a.startswith("-")][:2]
    if "--help" in argv or not words:
        return False
    second = words[1] if len(words) > 1 else None
    return (words[0], second) in LIGHT_READS or (words[0], None) in LIGHT_READS


def main() -> None:
    if _light(sys.argv[1:]):
        from config.settings import defer_settlement_check

        defer_settlement_check()
    word = _first_word(sys.argv[1:])
    module = COMMANDS.get(word) if word is not None else None
    app = load((module,)) if module is not None else load()
    app(prog_name="balancectl")


def __getattr__(name: str) -> Any:
    if name == "app":
        return load()
    raise AttributeError(name)


__all__ = ["COMMANDS", "MODULES", "app", "load", "main"]
