"""balancectl: the operators' command line (CONTRACT.md), a typer sub-app per domain.

The modules below register their commands on the root app in `worker.cli.common`; the
order of the imports is the order of `balancectl --help`.
"""

from __future__ import annotations

from worker.cli import (  # noqa: F401  (each registers its commands)
    accounts,
    alerts,
    auto_reload,
    bank,
    exports,
    fx,
    info,
    invoices,
    ledger,
    numbers,
    ops,
    payments,
    settlement,
)
from worker.cli.common import app


def main() -> None:
    app(prog_name="balancectl")


__all__ = ["app", "main"]
