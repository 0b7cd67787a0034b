"""Soak: kill -9 a worker while a charge is in flight, N times; prove one charge, one credit.

Not a test (never in CI). Needs PostgreSQL and Redis; by default it uses the local ones
(postgresql+psycopg://postgres@127.0.0.1:5432/bw_bench, created if missing, and Redis db 13).

    python bench/charge_kill_soak.py --rounds 20

Prints a table: per round the remote charges, credits, final status, and the seconds from
the kill to the charge being resolved by a fresh worker's janitor run (as_of past the lease).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _prepare_env(args: argparse.Namespace) -> dict[str, str]:
    import psycopg
    import redis

    admin = "postgresql://postgres@127.0.0.1:5432/test"
    db_url = (
        os.environ.get("DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/bw_bench"
    )
    if "DATABASE_URL" not in os.environ:
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname='bw_bench'").fetchone():
                conn.execute("CREATE DATABASE bw_bench")
    broker = os.environ.get("BROKER_URL") or "redis://127.0.0.1:6379/13"
    redis.Redis.from_url(broker).flushdb()
    env = {**os.environ, "DATABASE_URL": db_url, "BROKER_URL": broker, "RESULT_BACKEND": broker}
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND")})
    return env


def _worker(
    env: dict[str, str], name: str, log: Path, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "--loglevel=WARNING",
            "--concurrency=1",
            f"--hostname={name}@localhost",
            "--without-gossip",
            "--without-mingle",
        ],
        env={**env, **extra},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )


def _wait(check, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    env = _prepare_env(args)
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import func, select

    from worker.accounts import service as accounts
    from worker.celery import app
    from worker.charges.models import Charge
    from worker.db.migrate import upgrade
    from worker.db.session import unit_of_work
    from worker.kernel.clock import now
    from worker.kernel.money import format_amount
    from worker.ledger import service as ledger
    from worker.ledger.models import LedgerTransaction
    from worker.payment_methods import service as payment_methods
    from worker.psp.registry import get_adapter

    upgrade()
    log = Path("/tmp/charge_kill_soak.log")
    remote = get_adapter("braintree").remote  # type: ignore[attr-defined]
    rows = []
    for n in range(1, args.rounds + 1):
        with unit_of_work() as uow:
            account_id = accounts.create(uow, name=f"soak-{n}", now=now())["id"]
        with unit_of_work() as uow:
            payment_methods.add(
                uow,
                account_id=account_id,
                psp="braintree",
                nonce=f"fake-valid-visa-nonce:soak-{uuid.uuid4().hex}",
                now=now(),
            )
        slow = _worker(
            env, f"slow{n}-{uuid.uuid4().hex[:4]}", log, {"PSP_STUB_LATENCY_MS": "30000"}
        )
        key = f"soak-{uuid.uuid4().hex}"
        app.send_task(
            "balance.payments.top_up", args=[account_id, "25.00"], kwargs={"idempotency_key": key}
        )
        if not _wait(lambda key=key: remote.count(key) == 1, 60):
            print(f"round {n}: remote charge never happened; see {log}")
            return 1
        os.killpg(slow.pid, signal.SIGKILL)
        slow.wait(10)
        killed_at = time.monotonic()
        fresh = _worker(env, f"fresh{n}-{uuid.uuid4().hex[:4]}", log, {})
        app.send_task(
            "balance.payments.sync_pending",
            kwargs={"as_of": (now() + timedelta(days=1)).isoformat()},
        ).get(timeout=120)
        resolved_s = time.monotonic() - killed_at
        os.killpg(fresh.pid, signal.SIGTERM)
        fresh.wait(30)
        with unit_of_work() as uow:
            status = uow.session.scalars(
                select(Charge.status).where(Charge.account_id == account_id)
            ).all()
            credits = uow.session.scalar(
                select(func.count())
                .select_from(LedgerTransaction)
                .where(LedgerTransaction.account_id == account_id)
            )
            balance = accounts.get(uow.session, account_id).balance
        rows.append(
            (
                n,
                remote.count(key),
                credits,
                ",".join(status),
                format_amount(balance, "EUR"),
                resolved_s,
            )
        )
        redis_flush = __import__("redis").Redis.from_url(env["BROKER_URL"])
        redis_flush.delete("balance")  # the killed worker's unacked message would redeliver later
    with unit_of_work() as uow:
        audit_ok = ledger.audit(uow.session)["ok"]
    print(
        f"{'round':>5} | {'remote charges':>14} | {'credits':>7} | {'status':>10} | "
        f"{'balance':>7} | {'restart+janitor s':>17}"
    )
    print("-" * 76)
    for n, remote_n, credits, status, balance, secs in rows:
        print(
            f"{n:>5} | {remote_n:>14} | {credits:>7} | {status:>10} | {balance:>7} | {secs:>17.2f}"
        )
    ok = all(r[1] == 1 and r[2] == 1 and r[3] == "succeeded" for r in rows) and audit_ok
    print(
        f"\n{len(rows)} rounds: "
        f"{'every round exactly one remote charge and one credit' if ok else 'FAILURES'}; "
        f"ledger audit {'ok' if audit_ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
