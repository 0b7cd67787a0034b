"""Virtual numbers rented by accounts and their monthly fees, paid from the balance.

Sits beside the charge engine, below auto-reload (whose sweep reads this package's fee
look-ahead) and above the ledger (which reaches it only through the hooks in
worker/ledger/hooks.py that worker/wiring.py installs).
"""
