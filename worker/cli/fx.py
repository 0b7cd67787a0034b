"""Display-currency rates: `fx import FILE` (the ECB's euro reference rates)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli.common import JsonFlag, app, in_uow, run_action

fx_app = typer.Typer(no_args_is_help=True, help="Display-currency rates (ECB reference rates).")
app.add_typer(fx_app, name="fx")


def read_file(path: Path, field: str = "file") -> bytes:
    """The file's bytes; a missing or unreadable file is refused naming `field`."""
    from worker.kernel.errors import ValidationError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(field, f"cannot read {str(path)[:200]}: {exc.strerror}") from None


@fx_app.command("import")
def fx_import(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="eurofxref-daily.xml, eurofxref-hist.xml, eurofxref.csv, eurofxref-hist.csv "
            "or the ECB's .zip of a CSV.",
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Import the ECB's euro reference rates; prints `{dates, rates, first, last}`."""
    from worker.fx import service as fx
    from worker.kernel.clock import now

    def action(uow: Any) -> Any:
        return fx.import_rates(uow, read_file(file), now=now())

    run_action(as_json, in_uow(action))
