"""balance-worker: keeps prepaid balances healthy (`celery -A worker` finds worker.celery.app)."""

from worker.money import trap_floats

trap_floats()
