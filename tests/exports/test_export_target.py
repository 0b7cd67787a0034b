"""Where an export may write (`--out`), in what format, for which days: anything already at
`out` is refused, never replaced; a failed write is a refusal naming `out` with nothing left
behind; the format follows the suffix unless `--format` says it; dates stay in range."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import check_refusal, ok_json, run
from worker.accounts import service as accounts
from worker.db.session import unit_of_work
from worker.exports import service as exports
from worker.exports import writers
from worker.kernel.errors import ValidationError
from worker.ledger import adjustments

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 11, 19, 10, 0, tzinfo=UTC)


@pytest.fixture
def account_id() -> str:
    with unit_of_work() as uow:
        created = accounts.create(uow, name="Target", now=T0)["id"]
    with unit_of_work() as uow:
        adjustments.adjust(uow, account_id=created, amount="10", reason="t", now=T0)
    return str(created)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _export(account_id: str, out: Path, **kwargs: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return exports.export(
            uow.session, kind="transactions", account_id=account_id, out=out, **kwargs
        )


def _refused(account_id: str, out: Path, field: str, **kwargs: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        _export(account_id, out, **kwargs)
    assert refused.value.field == field, refused.value
    return str(refused.value)


def test_an_existing_file_is_neither_replaced_nor_rechmodded(
    account_id: str, tmp_path: Path
) -> None:
    out = tmp_path / "old.csv"
    out.write_text("keep me")
    out.chmod(0o600)
    assert "already exists" in _refused(account_id, out, "out")
    assert out.read_text() == "keep me" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]  # no temporary file


def test_a_fifo_a_folder_and_symlinks_are_refused(account_id: str, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "nowhere.csv")
    to_file = tmp_path / "link.csv"
    (tmp_path / "real.csv").write_text("real")
    to_file.symlink_to(tmp_path / "real.csv")
    for out in (fifo, folder, dangling, to_file):
        _refused(account_id, out, "out")
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and folder.is_dir()
    assert not (tmp_path / "nowhere.csv").exists()  # never written through the link
    assert (tmp_path / "real.csv").read_text() == "real"
    assert len(list(tmp_path.iterdir())) == 5


def test_a_new_file_gets_the_mode_of_any_new_file(
    account_id: str, tmp_path: Path, umask_022: None
) -> None:
    for name in ("new.csv", "new.xlsx"):
        out = tmp_path / name
        assert _export(account_id, out)["rows"] == 1
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "new.xlsx"]


@pytest.mark.parametrize(("name", "method"), [("full.csv", "row"), ("full.xlsx", "close")])
def test_a_failing_write_is_refused_naming_out_and_leaves_nothing(
    account_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, method: str
) -> None:
    writer: Any = writers.CsvWriter if name.endswith(".csv") else writers.XlsxWriter
    original = getattr(writer, method)

    def no_space(self: Any, *args: Any) -> None:
        if method == "close":  # the workbook written whole, then the disk is full
            original(self, *args)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, method, no_space)
    assert "No space left" in _refused(account_id, tmp_path / name, "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "kwargs", "field"),
    [
        ("t.txt", {}, "format"),
        ("t", {}, "format"),
        ("t.csv", {"fmt": "xlsx"}, "out"),
        ("t.xlsx", {"fmt": "csv"}, "out"),
        ("t.csv", {"until": "9999-12-31"}, "to"),
        ("t.csv", {"since": "1969-12-31"}, "from"),
        ("t.csv", {"since": "9000-01-01"}, "from"),
    ],
)
def test_format_and_days_refused_by_name(
    account_id: str, tmp_path: Path, name: str, kwargs: dict[str, Any], field: str
) -> None:
    _refused(account_id, tmp_path / name, field, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_format_follows_a_known_suffix(account_id: str, tmp_path: Path) -> None:
    assert _export(account_id, tmp_path / "T.CSV")["format"] == "csv"
    assert _export(account_id, tmp_path / "t.xlsx")["format"] == "xlsx"
    assert _export(account_id, tmp_path / "t.txt", fmt="csv")["format"] == "csv"
    assert _export(account_id, tmp_path / "t.csv", until="8999-12-31")["rows"] == 1


def test_cli_refuses_an_existing_out_and_a_far_date(account_id: str, tmp_path: Path) -> None:
    out = tmp_path / "db.sqlite3"
    out.write_bytes(b"SQLite format 3\x00")
    check_refusal(
        run("export", "activity", account_id, "--out", str(out), "--format", "csv", "--json"),
        "out",
        "invalid",
    )
    assert out.read_bytes() == b"SQLite format 3\x00"
    new = tmp_path / "t.csv"
    far = run("export", "transactions", account_id, "--out", str(new), "--to", "9999-12-31",
              "--json")  # fmt: skip
    check_refusal(far, "to", "invalid")
    check_refusal(
        run("export", "transactions", account_id, "--out", str(tmp_path / "t.txt"), "--json"),
        "format",
        "invalid",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.sqlite3"]
    assert ok_json("export", "transactions", account_id, "--out", str(new))["rows"] == 1
