"""balance-worker: keeps prepaid balances healthy (`celery -A worker` finds worker.celery.app)."""

from worker.kernel.money import trap_floats

trap_floats()
